"""The alert state machine every kind of series shares.

A series is *inactive* until its condition holds, then *pending* (for the
rule's ``for`` duration; a ``for`` of 0 skips it), then *firing* at a level
(see :mod:`tocsin.rules.levels`). A fire that a rate guard (cooldown, daily
or window cap) holds back leaves the series *held*: it fires as soon as it is
allowed if the condition still holds, and falls back to inactive, silently,
if the condition stops holding first.

A firing series moves between levels without becoming a new alert, and
resolves once no level holds, its window holds fewer samples than the rule's
``min_samples``, or the rule's no-data policy says so. ``keep_firing_for``
keeps a cleared series firing a while; a breach within it keeps the alert as
it is.

With flap detection, the level a series evaluates to is recorded once per
step and at every change; while the weighted share of changes says the
series is flapping, a firing alert stays open and produces nothing but the
records of its flapping and settling.
"""

from __future__ import annotations

from math import floor
from typing import TYPE_CHECKING

from tocsin.rules.conditions import format_duration

if TYPE_CHECKING:
    from tocsin.rules.decisions import Decision

INACTIVE, PENDING, HELD, FIRING = range(4)
STATE_NAMES = ("inactive", "pending", "held", "firing")

# Bits of a series' ``_flags``: whether it is flapping, whether the no-data
# policy has taken over, whether its window stepped, and (from bit 3) the
# level flap detection saw last.
FLAPPING = 1
SILENT = 2
#: The series' window moved on to a new bin since its last evaluation.
STEPPED = 4
_LEVEL_SHIFT = 3

#: The slots :class:`AlertMachine` uses; each concrete series declares them.
STATE_SLOTS = (
    "_rule",
    "_values",
    "_state",
    "_level",
    "_since",
    "_cleared",
    "_restored",
    "_heard",
    "_flips",
    "_flags",
)


class AlertMachine:
    """The states of one series; mixed into the series classes.

    The concrete class declares the slots of :data:`STATE_SLOTS` (a mixin
    cannot, next to a base with slots of its own) and calls :meth:`_decide`
    from its ``evaluate``.
    """

    __slots__ = ()

    def _init_states(self) -> None:
        self._state = INACTIVE
        self._level = 0
        self._since: float | None = None
        #: When a firing series' condition stopped holding, while the rule's
        #: ``keep_firing_for`` keeps it firing.
        self._cleared: float | None = None
        #: ``(series key, labels)`` of an alert restored after a restart.
        self._restored: tuple[str, dict[str, str]] | None = None
        #: Timestamp of the newest sample (kept for no-data policies only).
        self._heard: float | None = None
        self._flips = 0
        self._flags = 0

    @property
    def rule(self) -> str:
        """Return the name of the series' rule."""
        return self._rule.name

    @property
    def values(self) -> tuple[str, ...]:
        """Return the values of the rule's ``group_by`` labels, in order."""
        return self._values

    @property
    def key(self) -> str:
        """Return the canonical series key (``k=v`` pairs in ``group_by`` order)."""
        if self._restored is not None:
            return self._restored[0]
        return self._rule.key_of(self._values)

    @property
    def labels(self) -> dict[str, str]:
        """Return the ``group_by`` labels and their values."""
        if self._restored is not None:
            return dict(self._restored[1])
        return dict(zip(self._rule.group_by, self._values, strict=True))

    @property
    def state(self) -> str:
        """Return ``inactive``, ``pending``, ``held`` or ``firing``."""
        return STATE_NAMES[self._state]

    @property
    def severity(self) -> str | None:
        """Return the severity of a firing series, ``None`` otherwise."""
        if self._state != FIRING:
            return None
        return self._rule.levels.name(self._level)

    @property
    def since(self) -> float | None:
        """Return when the condition started to hold (pending, held or firing)."""
        return self._since

    @property
    def is_firing(self) -> bool:
        return self._state == FIRING

    @property
    def is_flapping(self) -> bool:
        return bool(self._flags & FLAPPING)

    @property
    def is_watched(self) -> bool:
        """Return whether time alone can change the series' state.

        Pending and held series wait for time to pass, and so does a cleared
        one kept firing or a flapping one; a restored one waits for its grace
        to end. Any other series changes only with new samples (which queue
        it) or when a bin leaves its window.
        """
        return (
            self._state in (PENDING, HELD)
            or self._restored is not None
            or self._cleared is not None
            or bool(self._flags & FLAPPING)
        )

    def _rewatch(self) -> None:
        watch = self._rule.watch
        if self.is_watched:
            watch.add(self)
        else:
            watch.discard(self)

    def _decide(
        self, now: float, reading: object, count: int, stepped: bool
    ) -> Decision | None:
        """Step the state for one evaluation; return what changed, if anything.

        :param reading: what the rule's level tests take (a window, a number
            or ``None``, or the series itself).
        :param count: samples behind ``reading``.
        :param stepped: a step (a bin) passed since the previous evaluation.
        """
        rule = self._rule
        if rule.silence_after is not None:
            heard = self._heard
            if heard is None:
                heard = rule.started
            if now - heard >= rule.silence_after:
                return self._silence(now)
            self._flags &= ~SILENT
            if not count:
                # An empty window waits for the no-data policy.
                return None

        short = count < rule.min_samples
        state = self._state
        levels = rule.levels
        if state == FIRING:
            if short and self._restored is not None and self._in_grace(now):
                return None
            target = 0 if short else levels.settle(reading, self._level)
        else:
            target = 0 if short else levels.classify(reading)

        started, settled = False, False
        if rule.flap is not None:
            started, settled = self._record_level(target, stepped)
        if state == FIRING:
            return self._firing(now, reading, target, started, settled)
        if target:
            return self._breach(now, reading, target)
        if state != INACTIVE:
            self._state = INACTIVE
            self._since = None
            self._rewatch()
        return None

    def _record_level(self, level: int, stepped: bool) -> tuple[bool, bool]:
        """Feed flap detection; return whether flapping started, or stopped."""
        flags = self._flags
        changed = level != flags >> _LEVEL_SHIFT
        if not (changed or stepped):
            return False, False
        flap = self._rule.flap
        self._flips = flips = flap.push(self._flips, changed)
        was = bool(flags & FLAPPING)
        now_flapping = flap.flapping(flips, was)
        flags = (flags & (FLAPPING | SILENT | STEPPED)) | (level << _LEVEL_SHIFT)
        if now_flapping:
            flags |= FLAPPING
        else:
            flags &= ~FLAPPING
        self._flags = flags
        return now_flapping and not was, was and not now_flapping

    def _breach(self, now: float, reading: object, target: int) -> Decision | None:
        """Move a series that is not firing towards firing at ``target``."""
        rule = self._rule
        if self._state == INACTIVE:
            self._state = PENDING
            self._since = now
            rule.watch.add(self)
        if now - self._since < rule.pending:
            return None
        return self._fire(now, reading, target)

    def _fire(
        self, now: float, reading: object, level: int, reason: str | None = None
    ) -> Decision | None:
        rule = self._rule
        key = self.key
        blocker = rule.limits.blocker(key, now)
        if blocker is not None:
            if self._state != HELD:
                self._state = HELD
                rule.watch.add(self)
                rule.hold(self, blocker)
            return None
        if self._since is None:
            self._since = now
        self._state = FIRING
        self._level = level
        self._rewatch()
        return rule.fire(self, now, reading, level, reason)

    def _firing(
        self,
        now: float,
        reading: object,
        target: int,
        started: bool,
        settled: bool,
    ) -> Decision | None:
        """Step a firing series whose condition now evaluates to ``target``."""
        rule = self._rule
        if self._flags & FLAPPING:
            self._cleared = None
            self._rewatch()
            if started:
                return rule.note(self, now, "flapping", "flapping: notifications pause")
            return None
        note = "settled after flapping" if settled else ""
        level = self._level
        if target == level:
            if self._cleared is not None:
                self._cleared = None
                self._rewatch()
            return rule.note(self, now, "settled", note) if settled else None
        if target:
            self._cleared = None
            self._level = target
            self._rewatch()
            return rule.change(self, now, reading, level, target, note)
        return self._clear(now, reading, note)

    def _clear(self, now: float, reading: object, note: str) -> Decision | None:
        """Resolve a firing series whose condition stopped holding, unless the
        rule's ``keep_firing_for`` holds it."""
        rule = self._rule
        kept_for = 0.0
        if rule.keep_firing_for > 0:
            if self._cleared is None:
                self._cleared = now
                rule.watch.add(self)
            kept_for = now - self._cleared
            if kept_for < rule.keep_firing_for:
                return rule.note(self, now, "settled", note) if note else None
        return self._resolve(now, reading, kept_for, note)

    def _resolve(
        self,
        now: float,
        reading: object,
        kept_for: float,
        note: str = "",
        reason: str | None = None,
    ) -> Decision:
        decision = self._rule.resolve(self, now, reading, kept_for, note, reason)
        self._state = INACTIVE
        self._level = 0
        self._since = None
        self._cleared = None
        self._restored = None
        self._rewatch()
        return decision

    def _silence(self, now: float) -> Decision | None:
        """Apply the rule's no-data policy to a series silent long enough."""
        rule = self._rule
        self._flags |= SILENT
        action = rule.silence_action
        reason = f"no data for {format_duration(rule.silence_after)}"
        if action == "alert":
            if self._state == FIRING:
                return None
            self._since = None
            return self._fire(now, None, rule.levels.top, reason)
        if action != "resolve":
            return None
        if self._state == FIRING:
            return self._resolve(now, None, 0.0, reason=reason)
        if self._state != INACTIVE:
            self._state = INACTIVE
            self._since = None
            self._rewatch()
        return None

    def _in_grace(self, now: float) -> bool:
        # After a restart or a change of its rule the window starts empty; an
        # alert restored as firing only resolves for want of samples once a
        # whole window could have been filled.
        rule = self._rule
        if not rule.tumbling:
            return now < rule.started + rule.window
        # A tumbling rule's bins still open at the start held samples it never
        # saw, and the bin holding the start was seen in part: the first bin
        # seen whole is the next one, sealed ``delay`` after its end.
        width = rule.width
        return now < (floor(rule.started / width) + 2) * width + rule.delay

    def restore(
        self, key: str, labels: dict[str, str], since: float, severity: str = ""
    ) -> None:
        """Mark the series as firing since ``since`` under an alert's key."""
        levels = self._rule.levels
        self._state = FIRING
        self._level = levels.level_of(severity) if severity else levels.top
        self._since = since
        self._restored = (key, dict(labels))
        self._rule.watch.add(self)
