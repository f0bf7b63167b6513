"""The rows of `make bench`'s table, one builder per measurement, and the notes behind them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.perf.pacer import PaceResult
from bench.perf.payments import CreatePayment
from bench.perf.pipeline import Drain, PipelineLatency
from bench.perf.receiver import ReceiverSettings, Throughput
from bench.perf.report import (
    code_under_test,
    machine_facts,
    markdown,
    ms,
    percentile,
    rate,
    ratio,
)
from bench.perf.soak import Soak

HEADER = ("measure", "ours", "comparator", "ours / comparator", "issue 12 goal")


@dataclass
class Table:
    load_before: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self, load_after: str) -> str:
        return "\n".join(
            [
                markdown(HEADER, self.rows),
                "",
                *(f"- {note}" for note in self.notes),
                "",
                "Machine: " + ", ".join(machine_facts()) + ".",
                f"Code: {code_under_test()}.",
                f"Load average (1/5/15 min) before {self.load_before}, after {load_after}. "
                "Client, servers, Redis and PostgreSQL share these cores, and other people's "
                "test runs may too: figures are noisy; compare the ratios within one run.",
            ]
        )


COMPARATORS = {
    "bare": "bare (SDK construct_event + LPUSH, issue 12's)",
    "bare-verify": "bare (SDK verify_header + json.loads + LPUSH)",
}


def _throughput_row(table: Table, cfg: ReceiverSettings, runs: dict[str, list[Throughput]]) -> None:
    best = {name: max(results, key=lambda t: t.per_second) for name, results in runs.items()}
    label = (
        f"receiver: accepted (2xx) deliveries/s, wrk {cfg.connections} connections, "
        f"{cfg.seconds:g} s, signed 2 KB events, best of {cfg.rounds}"
    )

    def cell(result: Throughput) -> str:
        return f"{rate(result.per_second)}/s ({result.refused:,} non-2xx)"

    ours = best["ours"]
    for name, comparator in COMPARATORS.items():
        other = best[name]
        goal = "≥ 0.90" if name == "bare" else ""
        versus = ratio(ours.per_second, other.per_second)
        table.rows.append((label, cell(ours), f"{comparator}: {cell(other)}", versus, goal))
    for name, results in runs.items():
        each = ", ".join(
            f"{rate(t.per_second)}/s ({t.refused} non-2xx, {t.socket_errors} socket errors, "
            f"wrk p99 {t.p99_ms:.1f} ms, wrk CPU {t.client_cpu:.2f} core)"
            for t in results
        )
        table.notes.append(f"receiver throughput, {name}, each round: {each}")


def _latency_note(table: Table, name: str, result: PaceResult) -> None:
    own = result.own_lag()
    table.notes.append(
        f"receiver latency, {name}: {len(result.shots):,} sent at "
        f"{len(result.shots) / result.wall_seconds:,.0f}/s achieved, {result.refused()} "
        f"non-2xx or unanswered, {result.behind_slow_answers():,} fell due while their "
        f"connection still waited for an answer; the pacer used {result.client_cpu_share():.2f} "
        f"core and was itself late by p50 {ms(percentile(own, 50))} / p99 "
        f"{ms(percentile(own, 99))} ms (part of the latency, which runs from the scheduled time)"
    )


def _latency_row(table: Table, cfg: ReceiverSettings, paced: dict[str, PaceResult]) -> None:
    cells, p99 = {}, {}
    for name, result in paced.items():
        latencies = [shot.latency for shot in result.ok()]
        p99[name] = percentile(latencies, 99)
        cells[name] = f"{ms(percentile(latencies, 50))} / {ms(p99[name])} ms"
        _latency_note(table, name, result)
    label = (
        f"receiver: acknowledgement at a constant {cfg.latency_rate:,.0f}/s, open loop, "
        f"{cfg.latency_seconds:g} s, p50 / p99"
    )
    for name, comparator in COMPARATORS.items():
        row = (label, cells["ours"], f"{comparator}: {cells[name]}")
        table.rows.append((*row, f"p99 {ratio(p99['ours'], p99[name])}", "p99 ≤ 10 ms"))


def receiver_rows(
    table: Table,
    cfg: ReceiverSettings,
    runs: dict[str, list[Throughput]],
    paced: dict[str, PaceResult],
) -> None:
    _throughput_row(table, cfg, runs)
    _latency_row(table, cfg, paced)


def pipeline_rows(
    table: Table, ours: Drain, naive: Drain, steady: PipelineLatency, steady_rate: float
) -> None:
    def cell(drain: Drain) -> str:
        if not drain.complete:
            return f"INCOMPLETE: {drain.done + drain.dead:,} runs finished in {drain.seconds:.0f} s"
        return f"{rate(drain.per_second)} events/s"

    both = ours.complete and naive.complete
    table.rows.append(
        (
            f"pipeline: drain {ours.events:,} queued payment_intent.succeeded events, "
            "2 handlers, Procfile worker flags",
            cell(ours),
            f"naive: {cell(naive)}",
            ratio(ours.per_second, naive.per_second) if both else "n/a",
            "≥ 500/s and ≥ 2.00",
        )
    )
    for name, drain in (("ours", ours), ("naive", naive)):
        table.notes.append(
            f"drain, {name}: {drain.seconds:.2f} s from the first message taken"
            f"{'' if drain.start_seen_in_queue else ' (not seen: from worker start)'} to the "
            f"last run seen finished; runs done {drain.done:,}, dead {drain.dead:,}"
            f"{'' if drain.complete else ', INCOMPLETE (timeout or worker exit)'}"
        )
    latencies = steady.latencies + [float("inf")] * steady.incomplete
    table.rows.append(
        (
            f"pipeline: delivery sent → last handler done, steady {steady_rate:,.0f}/s, p50 / p99",
            f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))} ms",
            "—",
            "—",
            "p99 ≤ 250 ms",
        )
    )
    pacing = steady.pacing
    table.notes.append(
        f"pipeline latency: {steady.sent:,} events sent at "
        f"{steady.sent / pacing.wall_seconds:,.0f}/s achieved, {steady.refused} refused, "
        f"{steady.incomplete} not done by the deadline (n/a when they decide the percentile); "
        "done = the commit that marked the event's last run done (a deferred trigger's "
        "clock_timestamp())"
    )


def payment_rows(table: Table, result: CreatePayment) -> None:
    ours50, direct50 = percentile(result.ours, 50), percentile(result.direct, 50)
    table.rows.append(
        (
            f"create-payment p50, {len(result.ours)} sequential calls each, interleaved",
            f"{ms(ours50)} ms",
            f"direct SDK PaymentIntent.create: {ms(direct50)} ms",
            f"{(ours50 - direct50) * 1000:+.1f} ms",
            "≤ +2 ms",
        )
    )
    table.notes.append(
        f"create-payment p99: ours {ms(percentile(result.ours, 99))} ms, direct "
        f"{ms(percentile(result.direct, 99))} ms; failed calls: {result.failures}"
    )


def soak_rows(table: Table, soak: Soak, soak_rate: float) -> None:
    label = f"soak {soak.seconds:,.0f} s at {soak_rate:,.0f}/s"
    mib = 1024 * 1024
    for name, attribute in (("web", "web_rss"), ("worker", "worker_rss")):
        first = getattr(soak.samples[min(soak.baseline, len(soak.samples) - 1)], attribute)
        last = getattr(soak.samples[-1], attribute)
        table.rows.append(
            (
                f"{label}: {name} RSS change",
                f"{soak.change(attribute):+.1f}% ({first / mib:,.0f} → {last / mib:,.0f} MiB)",
                "—",
                "—",
                "within 10%",
            )
        )
    table.rows.append((f"{label}: max messages queued", f"{soak.max_queued():,}", "—", "—", "flat"))
    table.rows.append((f"{label}: error log lines", f"{soak.error_lines:,}", "—", "—", "0"))
    table.notes.append(
        f"soak: {soak.sent:,} deliveries, {soak.refused} refused; {len(soak.samples)} samples; "
        f"queued per sample: {', '.join(str(s.queued) for s in soak.samples[-12:])} (last 12)"
    )
