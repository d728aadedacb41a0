"""queue.scheduler — who is due, who delivers it, what happens next.

SYNOPSIS
    scheduler = Scheduler(store, route, retry_schedule=[300, 900, 1800, 3600],
                          max_lifetime=5 * 86400, lease_seconds=600,
                          concurrency=50, owner="node1")
    task = asyncio.create_task(scheduler.run())
    scheduler.wake()          # the receiver, right after a 250
    await scheduler.stop()

DESCRIPTION
    The queue manager (Postfix's qmgr, without the routing): it leases due
    recipients from the store, groups them by (queue id, transport, destination),
    hands each group to its transport, and records one result per recipient. It
    does not talk to the outside world itself; routing is the ``route`` callable,
    delivery is the transports'.

    Outcomes, per recipient:
      DELIVERED, BOUNCED   recorded as they are (final).
      DEFERRED             next_attempt_at = now + retry_schedule[attempts], the
                           last entry repeating (backoff as data, invariant 6);
                           once the message is older than max_lifetime, BOUNCED
                           with 4.4.7 "message expired" instead (RFC 3463 4.4.7).
                           Once the message is older than delay_warning_after,
                           the result carries delay_warning, and the store
                           writes one "delayed" DSN request per recipient.
      exception            a transport that raises, returns the wrong number of
                           results, or a route() that raises: DEFERRED 4.3.0 for
                           the recipients concerned. Never lost, never a crash.
    The store writes the DSN requests (the notification outbox) in the same
    transaction as each result; ``on_outcome`` is called after each record with
    the recorded result, so the notifier (delivery.bounces) can be woken there.

    run() leases only while fewer than ``concurrency`` groups are in flight, so
    leased-but-waiting work stays bounded and leases are not spent in a queue. It
    sleeps until the earliest next_attempt_at, wake(), or a freed slot when the
    last lease was full.

CONFIGURATION
    retry_schedule    Seconds to wait after the 1st, 2nd, ... deferral.
    max_lifetime      Seconds after arrival when a deferred recipient bounces.
    lease_seconds     How long one owner holds a recipient; must exceed the
                      longest delivery attempt, or a second owner may deliver too.
    concurrency       Transport calls in flight at once.
    lease_batch       Most recipients leased per store call (default 4 x concurrency).
    delay_warning_after (0)  Age at which a deferred recipient's sender gets one
                      "delayed" DSN (RFC 3461 NOTIFY=DELAY or default); 0 is off.

SEE ALSO
    queue.store, delivery.base, routing
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

import structlog

from postgate.delivery.base import Route, deferred
from postgate.queue.model import AttemptResult, LeasedRecipient, RecipientStatus
from postgate.queue.store import QueueError, Store

log = structlog.get_logger("postgate.qmgr")

_ATTEMPT_STATUSES = frozenset(
    {RecipientStatus.DELIVERED, RecipientStatus.DEFERRED, RecipientStatus.BOUNCED}
)

Outcome = Callable[[LeasedRecipient, AttemptResult], None]


def _age_text(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


class Scheduler:
    def __init__(
        self,
        store: Store,
        route: Callable[[str, str], Route],
        *,
        retry_schedule: Sequence[float],
        max_lifetime: float,
        lease_seconds: float,
        concurrency: int,
        owner: str,
        clock: Callable[[], float] = time.time,
        on_outcome: Outcome | None = None,
        lease_batch: int | None = None,
        idle_poll: float = 60.0,
        delay_warning_after: float = 0.0,
    ) -> None:
        if not retry_schedule or min(retry_schedule) < 0:
            raise ValueError("retry_schedule needs at least one delay, none negative")
        if concurrency < 1 or lease_seconds <= 0:
            raise ValueError("concurrency must be >= 1 and lease_seconds > 0")
        if delay_warning_after < 0:
            raise ValueError("delay_warning_after must be >= 0 (0 turns it off)")
        self._store = store
        self._route = route
        self._retry_schedule = tuple(retry_schedule)
        self._max_lifetime = max_lifetime
        self._delay_warning_after = delay_warning_after
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self._owner = owner
        self._clock = clock
        self._on_outcome = on_outcome
        self._lease_batch = lease_batch if lease_batch is not None else 4 * concurrency
        self._idle_poll = idle_poll
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[int]] = set()
        self._saturated = False
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()

    # --- control ------------------------------------------------------------

    def wake(self) -> None:
        """Look for due work now (call from the event loop's thread)."""
        self._wake.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop leasing; let attempts in flight finish for up to ``grace`` seconds.
        Attempts still running then are cancelled; their leases expire and another
        owner (or the next start) retries them."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def run(self) -> None:
        """Deliver until stop()."""
        self._stopping = False
        self._running = True
        self._stopped.clear()
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._lease_and_start()
                    delay = await self._idle_delay()
                except QueueError as exc:
                    log.error("queue unavailable", reason=str(exc))
                    delay = min(self._idle_poll, 5.0)
                except Exception:
                    # A bug must not stop delivery for good: log it and try again.
                    log.exception("scheduler loop failed")
                    delay = min(self._idle_poll, 5.0)
                if self._stopping:
                    break
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self._running = False
            self._stopped.set()

    async def run_once(self) -> int:
        """Lease everything due now, deliver it, record it; return attempts made."""
        now = self._clock()
        leased = await self._store.lease_due(
            now, self._lease_batch, self._lease_seconds, self._owner
        )
        counts = await asyncio.gather(*(self._attempt(g) for g in self._groups(leased)))
        return sum(counts)

    # --- the loop -----------------------------------------------------------

    async def _lease_and_start(self) -> None:
        if len(self._in_flight) >= self._concurrency:
            self._saturated = True
            return
        now = self._clock()
        leased = await self._store.lease_due(
            now, self._lease_batch, self._lease_seconds, self._owner
        )
        # A full lease means more is probably due: look again when a slot frees.
        self._saturated = len(leased) >= self._lease_batch
        for group in self._groups(leased):
            task = asyncio.create_task(self._attempt(group))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[int]) -> None:
        self._in_flight.discard(task)
        # Always look again: while the attempt ran, its recipients' due time was the
        # lease expiry; the recorded outcome may have made them due much sooner
        # (a deferral with a short backoff), or a slot is free for waiting work.
        self._wake.set()

    async def _idle_delay(self) -> float:
        if self._saturated:
            return 0.0 if len(self._in_flight) < self._concurrency else self._idle_poll
        next_due = await self._store.next_due_at()
        if next_due is None:
            return self._idle_poll
        return max(0.0, min(next_due - self._clock(), self._idle_poll))

    # --- one group ----------------------------------------------------------

    def _groups(
        self, leased: Sequence[LeasedRecipient]
    ) -> list[tuple[Route | None, list[LeasedRecipient]]]:
        """Group by (queue id, route); a recipient whose routing fails is alone with
        route None and is deferred without a transport call."""
        # Keyed by the transport's identity: a transport object need not be hashable.
        groups: dict[tuple[str, int, str], tuple[Route, list[LeasedRecipient]]] = {}
        unroutable: list[tuple[Route | None, list[LeasedRecipient]]] = []
        for recipient in leased:
            try:
                route = self._route(recipient.address, recipient.envelope.sender)
            except Exception:
                log.exception("routing failed", queue_id=recipient.queue_id, to=recipient.address)
                unroutable.append((None, [recipient]))
                continue
            key = (recipient.queue_id, id(route.transport), route.destination)
            groups.setdefault(key, (route, []))[1].append(recipient)
        return [*groups.values(), *unroutable]

    async def _attempt(self, group: tuple[Route | None, list[LeasedRecipient]]) -> int:
        route, recipients = group
        async with self._slots:
            if route is None:
                results = [deferred("451 4.3.0 routing failed, will retry")]
            else:
                results = await self._deliver(route, recipients)
            now = self._clock()
            recorded = 0
            for recipient, result in zip(recipients, results, strict=True):
                if await self._record(recipient, self._finish(recipient, result, now)):
                    recorded += 1
            return recorded

    async def _deliver(
        self, route: Route, recipients: list[LeasedRecipient]
    ) -> list[AttemptResult]:
        transport = route.transport
        queue_id = recipients[0].queue_id
        try:
            message = await self._store.load_message(queue_id)
            results = await transport.deliver(message, recipients)
            if len(results) != len(recipients):
                raise RuntimeError(f"{len(results)} results for {len(recipients)} recipients")
            return results
        except Exception as exc:
            # Never lost: whatever went wrong, the recipients stay queued.
            log.exception("transport failed", transport=transport.name, queue_id=queue_id)
            reply = f"451 4.3.0 {transport.name} delivery failed: {exc}"
            return [deferred(reply)] * len(recipients)

    def _finish(self, leased: LeasedRecipient, result: AttemptResult, now: float) -> AttemptResult:
        if result.status not in _ATTEMPT_STATUSES:
            result = deferred(f"451 4.3.0 transport reported status {result.status.value}")
        if result.status is not RecipientStatus.DEFERRED:
            return result
        age = now - leased.first_queued_at
        if age >= self._max_lifetime:
            # RFC 3463 4.4.7: delivery time expired; the last error goes with it.
            return dataclasses.replace(
                result,
                status=RecipientStatus.BOUNCED,
                reply=f"4.4.7 message expired after {_age_text(age)} in queue;"
                f" last error: {result.reply}",
                enhanced_status="4.4.7",
            )
        delay = self._retry_schedule[min(leased.attempts, len(self._retry_schedule) - 1)]
        # The store writes the "delayed" notification once per recipient; asking at
        # every deferral past the threshold is what makes a crash unable to skip it.
        warn = 0 < self._delay_warning_after <= age
        return dataclasses.replace(result, next_attempt_at=now + delay, delay_warning=warn)

    async def _record(self, leased: LeasedRecipient, result: AttemptResult) -> bool:
        try:
            await self._store.record_attempt(leased, result)
        except QueueError as exc:
            # The lease runs out and the recipient is attempted again: a duplicate
            # at worst, never a loss.
            log.error(
                "cannot record attempt",
                queue_id=leased.queue_id,
                to=leased.address,
                reason=str(exc),
            )
            return False
        log.info(
            "delivery",
            queue_id=leased.queue_id,
            to=leased.address,
            status=result.status.value,
            relay=result.remote_host,
            address=result.remote_address or None,
            tls=result.tls_version or None,
            attempt=leased.attempts + 1,
            delay=round(self._clock() - leased.first_queued_at, 3),
            reply=result.reply,
        )
        if self._on_outcome is not None:
            try:
                self._on_outcome(leased, result)
            except Exception:
                log.exception("on_outcome failed", queue_id=leased.queue_id)
        return True
