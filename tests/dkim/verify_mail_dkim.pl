#!/usr/bin/perl
# Verify the DKIM signatures of the message on stdin with Mail::DKIM (Debian's
# libmail-dkim-perl), asking the DNS server at 127.0.0.1:$ARGV[0] for keys.
# Prints one line per signature: "result domain selector algorithm detail".
use strict;
use warnings;
use Net::DNS::Resolver;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;

my $port = shift @ARGV or die "usage: $0 PORT < message\n";
my $resolver = Net::DNS::Resolver->new(
    nameservers => ['127.0.0.1'], port => $port, recurse => 0,
    tcp_timeout => 5, udp_timeout => 5,
);
Mail::DKIM::DNS::resolver($resolver);

my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\r?\n\z/\r\n/;
    $verifier->PRINT($line);
}
$verifier->CLOSE();
foreach my $signature ($verifier->signatures) {
    printf "%s %s %s %s %s\n", $signature->result, $signature->domain,
        $signature->selector, $signature->algorithm, ($signature->result_detail // '');
}
