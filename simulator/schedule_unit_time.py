"""A unit-time dry run of a schedule, and the text grid drawn from it.

Every F and every B takes one slot, communication takes none, sends are asynchronous and a
receive waits for its message. Each rank runs its action list in order as early as its
dependencies allow. This is the timing model behind the closed forms of the pipeline bubble
(GPipe and 1F1B: 2(M + P - 1) slots; interleaved 1F1B: 2(MV + P - 1) slots when M >= P and
2(M + PV - 1) when M < P),
and it finds deadlocks: when no rank can move, the error lists every rank's blocked action.

    print(format_grid(build_schedule("1f1b", 4, 1, 8)))
"""

from __future__ import annotations

import textwrap

from simulator.errors import ScheduleError
from simulator.schedule_ir import Action, Schedule

__all__ = [
    "unit_time_order",
    "unit_time_step_slots",
    "unit_time_bubble_fraction",
    "format_grid",
]


def unit_time_order(schedule: Schedule) -> dict[int, list[tuple[int, Action]]]:
    """Run the schedule in unit time: rank -> [(start slot, F or B action)] in execution order.

    Raises:
        ScheduleError: the schedule deadlocks (a receive whose message is never sent, or a cycle
            of ranks waiting on each other); the message lists every rank's blocked action.
    """
    clock_slots = {rank: 0 for rank in schedule.actions}
    position = {rank: 0 for rank in schedule.actions}
    sent_at_slot: dict[Action, int] = {}  # receive action -> slot its message was sent
    order: dict[int, list[tuple[int, Action]]] = {rank: [] for rank in schedule.actions}
    progress = True
    while progress:
        progress = False
        for rank in sorted(schedule.actions):
            actions = schedule.actions[rank]
            while position[rank] < len(actions):
                action = actions[position[rank]]
                if action.kind.is_recv:
                    if action not in sent_at_slot:
                        break
                    clock_slots[rank] = max(clock_slots[rank], sent_at_slot[action])
                elif action.kind.is_send:
                    sent_at_slot[action.partner()] = clock_slots[rank]
                else:
                    order[rank].append((clock_slots[rank], action))
                    clock_slots[rank] += 1
                position[rank] += 1
                progress = True
    if any(position[rank] < len(schedule.actions[rank]) for rank in schedule.actions):
        raise ScheduleError(_deadlock_message(schedule, position))
    return order


def _deadlock_message(schedule: Schedule, position: dict[int, int]) -> str:
    lines = []
    for rank in sorted(schedule.actions):
        actions = schedule.actions[rank]
        if position[rank] == len(actions):
            lines.append(f"rank {rank} finished")
            continue
        blocked = actions[position[rank]]
        sender = blocked.partner()
        lines.append(
            f"rank {rank} blocked at {blocked} (action {position[rank]} of {len(actions)}), "
            f"waiting for {sender} from rank {schedule.chunk_rank(sender.stage_index)}"
        )
    return (
        f"schedule {schedule.label()} deadlocks: with asynchronous sends and blocking receives "
        f"no rank can proceed; " + "; ".join(lines)
    )


def unit_time_step_slots(schedule: Schedule) -> int:
    """Length of one step in slots (one slot per F or B, free communication)."""
    order = unit_time_order(schedule)
    return max((start + 1 for ops in order.values() for start, _ in ops), default=0)


def unit_time_bubble_fraction(schedule: Schedule) -> float:
    """Idle share of each rank in unit time: (step - 2MV) / step.

    Every rank computes 2MV slots (an F and a B per chunk and micro-batch), so the idle time is
    the same on every rank. Narayanan et al. quote the bubble relative to the ideal time
    instead, (step - 2MV) / 2MV = (P - 1) / (V M); convert with x / (1 - x).
    """
    step_slots = unit_time_step_slots(schedule)
    busy_slots = 2 * schedule.num_microbatches * schedule.num_virtual_stages
    return (step_slots - busy_slots) / step_slots


def format_grid(schedule: Schedule, max_width_chars: int = 120) -> str:
    """A text grid of the unit-time run: one row per rank, one column per slot.

    A cell is "F3" (forward of micro-batch 3) or "B3" (its backward), with a letter for the
    virtual index when V > 1 ("F3b" = micro-batch 3 on the rank's second chunk); "." is an
    idle slot, so the bubble is visible. Long grids wrap into bands of at most
    `max_width_chars` characters, each with its own slot ruler.
    """
    order = unit_time_order(schedule)
    num_slots = max((start + 1 for ops in order.values() for start, _ in ops), default=0)
    cells = {rank: ["."] * num_slots for rank in order}
    for rank, ops in order.items():
        for start, action in ops:
            cells[rank][start] = _cell(schedule, action)
    width = max([len(c) for row in cells.values() for c in row] + [1])
    label_width = len(f"rank {max(order, default=0)}")
    per_band = max(1, (max_width_chars - label_width - 3) // (width + 1))
    bubble = unit_time_bubble_fraction(schedule) if num_slots else 0.0
    lines = [f"{schedule.label()}: {num_slots} slots, idle {bubble:.1%} of each rank"]
    for band_start in range(0, num_slots, per_band):
        band = range(band_start, min(band_start + per_band, num_slots))
        lines.append((f"{'slot':<{label_width}} | " + _ruler(band, width)).rstrip())
        for rank in sorted(cells):
            row = " ".join(f"{cells[rank][slot]:<{width}}" for slot in band)
            lines.append(f"{f'rank {rank}':<{label_width}} | {row}".rstrip())
    legend = "legend: Fm = forward of micro-batch m, Bm = its backward, . = idle"
    if schedule.num_virtual_stages > 1:
        legend += "; suffix a, b, ... = virtual index 0, 1, ... (chunk = rank + index * P)"
    legend += "; one slot per F or B, communication free"
    lines.append(textwrap.fill(legend, max_width_chars, subsequent_indent="  "))
    return "\n".join(lines)


def _cell(schedule: Schedule, action: Action) -> str:
    text = f"{action.kind.value}{action.microbatch_index}"
    if schedule.num_virtual_stages > 1:
        text += _virtual_letter(action.stage_index // schedule.num_stages)
    return text


def _virtual_letter(virtual_index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    if virtual_index < len(letters):
        return letters[virtual_index]
    return f"v{virtual_index}"


def _ruler(band: range, width: int) -> str:
    """Slot numbers above every fifth column, aligned with the cells, blank elsewhere."""
    ruler = [" "] * (len(band) * (width + 1))
    for column, slot in enumerate(band):
        if slot % 5 == 0:
            offset = column * (width + 1)
            ruler[offset:offset + len(str(slot))] = str(slot)
    return "".join(ruler).rstrip()
