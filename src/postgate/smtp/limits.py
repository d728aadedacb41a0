"""smtp.limits — the size limits the SMTP server enforces on a client.

SYNOPSIS
    SmtpLimits(max_message_size=36_700_160, max_recipients=100, max_bad_commands=20,
               max_command_line=512, max_text_line=1000, max_auth_line=12_288)

DESCRIPTION
    One frozen value handed to ``ServerConnection``. Line lengths count the CRLF.

CONFIGURATION
    max_message_size (36700160)  Largest message accepted, after dot-unstuffing (RFC 1870).
    max_recipients (100)         Accepted RCPTs per transaction; more get 452 4.5.3
                                 (RFC 5321 4.5.3.1.8 requires at least 100).
    max_bad_commands (20)        Machine-level rejections tolerated; the next one
                                 closes the session with 421 4.7.0.
    max_command_line (512)       RFC 5321 4.5.3.1.4; MAIL and RCPT get the extension
                                 allowances of RFC 1870, 3461 and 4954 on top.
    max_text_line (1000)         RFC 5321 4.5.3.1.6, for DATA bodies.
    max_auth_line (12288)        RFC 4954 4: AUTH command and exchange lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    max_message_size: int = 36_700_160
    max_recipients: int = 100
    max_bad_commands: int = 20
    max_command_line: int = 512
    max_text_line: int = 1000
    max_auth_line: int = 12_288

    def __post_init__(self) -> None:
        # Line limits below the shortest legal command would make the session unusable.
        if self.max_command_line < 64 or self.max_text_line < 80 or self.max_auth_line < 64:
            raise ValueError("SmtpLimits: line limits are too small to speak SMTP")
        if self.max_message_size < 0 or self.max_recipients < 1 or self.max_bad_commands < 0:
            raise ValueError("SmtpLimits: sizes and counts must be positive")
