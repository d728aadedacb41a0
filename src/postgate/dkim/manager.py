"""dkim.manager — generate keys and drive their life cycle against real DNS.

SYNOPSIS
    manager = KeyManager(KeyStore(data_dir / "dkim"), policy=RotationPolicy())
    keys = manager.keygen("example.com")                  # pending RSA + Ed25519 keys
    keys = manager.keygen("example.com", activate_now=True)
    keys = manager.rotate("example.com")                  # next selectors, pending
    events = await manager.advance("example.com", resolver)
    events = await manager.advance_all(resolver)
    await run_rotation(manager, resolver, interval=3600, stop=stop_event)

DESCRIPTION
    The I/O around dkim.rotation's state machine: key generation, the TXT lookups
    that decide whether a pending key is published (through our async resolver),
    and saving the result in the key store under its lock. Every change is logged
    with what the operator has to publish or may remove, and returned as
    ``KeyEvent`` values for the CLI to print.

    The server runs ``run_rotation`` (hourly by default: a new key is usually
    published within hours, and an hour of waiting costs nothing);
    ``postgate dkim advance`` does one pass at once. DNS is read outside the
    store lock and the state machine runs on the state read under it, so the CLI
    and the server can both advance without losing each other's changes.

DIAGNOSTICS
    DkimError for a bad domain, selector or algorithm, a second pending key, or an
    unreadable store. ``advance_all`` and ``run_rotation`` never raise for one
    domain's trouble: it is logged and reported, and the next pass retries.

SEE ALSO
    dkim.rotation, dkim.keys, dkim.signer
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from postgate.dkim.keys import (
    Algorithm,
    DkimError,
    DkimKey,
    KeyState,
    KeyStore,
    check_selector,
    new_key_material,
    normalize_domain,
)
from postgate.dkim.rotation import (
    EventKind,
    KeyEvent,
    RotationPolicy,
    Visibility,
    activate,
    default_selector,
    plan_advance,
)
from postgate.dkim.txt import key_record_matches, parse_tags
from postgate.dns.resolver import DnsError, Resolver

log = structlog.get_logger("postgate.dkim")


class KeyManager:
    """Generates keys and moves them through their states; see the module docstring."""

    def __init__(
        self,
        store: KeyStore,
        *,
        policy: RotationPolicy | None = None,
        clock: Callable[[], float] = time.time,
        log_events: bool = True,
    ) -> None:
        self.store = store
        self.policy = policy or RotationPolicy()
        self._clock = clock
        # The CLI prints the returned events itself; a log line too would repeat them.
        self._log_events = log_events

    def keygen(
        self,
        domain: str,
        selector: str | None = None,
        algorithms: Sequence[Algorithm | str] | None = None,
        *,
        activate_now: bool = False,
    ) -> list[DkimKey]:
        """New keys for ``domain``, pending (active with ``activate_now``). The
        returned keys carry the TXT records to publish (``key.txt_record()``)."""
        domain = normalize_domain(domain)
        chosen = _algorithms(algorithms or self.policy.algorithms)
        if selector is not None:
            selector = check_selector(selector)
        now = self._clock()

        def change(
            keys: list[DkimKey],
        ) -> tuple[list[DkimKey], tuple[list[DkimKey], list[KeyEvent]]]:
            taken = {k.selector for k in keys}
            made: list[DkimKey] = []
            for algorithm in chosen:
                if selector is None:
                    name = default_selector(algorithm, now, taken)
                else:
                    name = selector if len(chosen) == 1 else selector + algorithm.letter
                    if name in taken:
                        raise DkimError(f"selector {name} already exists for {domain}")
                taken.add(name)
                made.append(self._generate(domain, name, algorithm, now))
            keys = keys + made
            events: list[KeyEvent] = [
                KeyEvent(
                    EventKind.GENERATED,
                    domain,
                    k.selector,
                    f"publish: {k.txt_record().zone_line()}",
                )
                for k in made
            ]
            if activate_now:
                for key in made:
                    keys, activation_events = activate(keys, key.selector, now, self.policy.overlap)
                    events += activation_events
            by_selector = {k.selector: k for k in keys}
            return keys, ([by_selector[k.selector] for k in made], events)

        made, events = self.store.update(domain, change)
        self._log(events)
        return made

    def rotate(
        self, domain: str, algorithms: Sequence[Algorithm | str] | None = None
    ) -> list[DkimKey]:
        """Generate the next selector for each algorithm in use (pending).

        Raises DkimError when a pending key of that algorithm already waits for
        its DNS record: a second one would only add to what must be published.
        """
        domain = normalize_domain(domain)
        keys = self.store.keys(domain)
        if algorithms is None:
            in_use = {k.algorithm for k in keys if k.state is KeyState.ACTIVE}
            chosen = [a for a in Algorithm if a in in_use] or list(self.policy.algorithms)
        else:
            chosen = _algorithms(algorithms)
        for key in keys:
            if key.state is KeyState.PENDING and key.algorithm in chosen:
                raise DkimError(
                    f"{key.selector} ({key.algorithm}) is already pending for {domain}: publish "
                    f"{key.txt_name} and run `postgate dkim advance {domain}`"
                )
        return self.keygen(domain, algorithms=chosen)

    async def advance(
        self, domain: str, resolver: Resolver, now: float | None = None
    ) -> list[KeyEvent]:
        """One pass of the life cycle for ``domain``; returns what happened."""
        domain = normalize_domain(domain)
        moment = self._clock() if now is None else now
        keys = self.store.keys(domain)
        if not keys:
            return []  # nothing to advance; do not create a directory for a typo
        pending = [k for k in keys if k.state is KeyState.PENDING]
        # DNS first, outside the lock: the lock is only held for the short
        # read-modify-write, and plan_advance works on the state read under it.
        seen = await asyncio.gather(*(_visibility(k, resolver) for k in pending))
        visibility = {k.selector: v for k, v in zip(pending, seen, strict=True)}

        def change(keys: list[DkimKey]) -> tuple[list[DkimKey], list[KeyEvent]]:
            new_keys, events, due = plan_advance(keys, visibility, moment, self.policy)
            if due:
                taken = {k.selector for k in new_keys}
                for algorithm in due:
                    name = default_selector(algorithm, moment, taken)
                    taken.add(name)
                    key = self._generate(domain, name, algorithm, moment)
                    new_keys.append(key)
                    events.append(
                        KeyEvent(
                            EventKind.GENERATED,
                            domain,
                            name,
                            f"scheduled rotation; publish: {key.txt_record().zone_line()}",
                        )
                    )
            return new_keys, events

        events = self.store.update(domain, change)
        self._log(events)
        return events

    async def advance_all(self, resolver: Resolver, now: float | None = None) -> list[KeyEvent]:
        """``advance`` for every domain in the store; one domain's failure is
        logged and reported, and does not stop the others."""
        events: list[KeyEvent] = []
        for domain in self.store.domains():
            try:
                events += await self.advance(domain, resolver, now)
            except DkimError as exc:
                event = KeyEvent(EventKind.ERROR, domain, "", str(exc))
                self._log([event])
                events.append(event)
        return events

    def _log(self, events: Sequence[KeyEvent]) -> None:
        if not self._log_events:
            return
        for event in events:
            log.info(
                f"dkim_key_{event.kind.value.replace('-', '_')}",
                domain=event.domain,
                selector=event.selector,
                action=event.message,
            )

    def _generate(self, domain: str, selector: str, algorithm: Algorithm, now: float) -> DkimKey:
        material = new_key_material(algorithm)
        self.store.write_private_key(domain, selector, material)
        return DkimKey(
            domain=domain,
            selector=selector,
            algorithm=algorithm,
            state=KeyState.PENDING,
            created_at=now,
            public_key=material.public,
        )


async def run_rotation(
    manager: KeyManager,
    resolver: Resolver,
    *,
    interval: float = 3600.0,
    stop: asyncio.Event,
) -> None:
    """Run ``advance_all`` every ``interval`` seconds until ``stop`` is set. A
    failing pass is logged and the loop goes on: rotation must never take the
    server down, and the next pass retries."""
    while not stop.is_set():
        try:
            await manager.advance_all(resolver)
        except Exception:  # logged; the next pass retries
            log.exception("dkim_rotation_failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue


async def _visibility(key: DkimKey, resolver: Resolver) -> Visibility:
    try:
        records = await resolver.txt(key.txt_name)
    except DnsError as exc:
        return Visibility.DNS_ERROR if exc.temporary else Visibility.ABSENT
    if any(key_record_matches(r, key.algorithm.value, key.public_key) for r in records):
        return Visibility.MATCHES
    if any(_is_key_record(r) for r in records):
        return Visibility.MISMATCH
    return Visibility.ABSENT


def _is_key_record(text: str) -> bool:
    try:
        return "p" in parse_tags(text)
    except ValueError:
        return False


def _algorithms(values: Sequence[Algorithm | str]) -> list[Algorithm]:
    chosen: list[Algorithm] = []
    for value in values:
        try:
            algorithm = Algorithm(str(value).strip().lower())
        except ValueError:
            raise DkimError(f"unknown DKIM algorithm {value!r}: use rsa or ed25519") from None
        if algorithm not in chosen:
            chosen.append(algorithm)
    if not chosen:
        raise DkimError("no DKIM algorithm given")
    return chosen
