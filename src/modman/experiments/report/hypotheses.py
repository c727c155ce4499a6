"""The LLM experiment plan's hypotheses H1–H5, each judged by an explicit rule on the numbers of a set of runs.

Every judgement compares experiments at their best setting (``analysis.best_groups``). A difference is
called only when it exceeds the spread: the sum of the two standard deviations over seeds, and never less
than a floor (``LOSS_TOL`` nats, ``SPIKE_TOL`` nats, ``GROWTH_TOL``) that stands in for the spread of a
single seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .analysis import Group, compare, loss_spike, norm_growth, relative_speed

__all__ = ["Verdict", "judge_all", "LOSS_TOL", "SPIKE_TOL", "GROWTH_TOL", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE"]

LOSS_TOL = 0.01
SPIKE_TOL = 0.01
GROWTH_TOL = 0.05
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
STIEFEL_EXPS = ("stiefel_all", "stiefel_attention", "stiefel_ffn", "manifold_muon")


@dataclass
class Verdict:
    key: str
    title: str
    rule: str
    verdict: str
    reason: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _missing(key: str, title: str, rule: str, best: dict[str, Group], needed: tuple[str, ...]) -> Verdict | None:
    absent = [e for e in needed if e not in best]
    if not absent:
        return None
    return Verdict(
        key,
        title,
        rule,
        INCONCLUSIVE,
        f"no runs of {', '.join(absent)} in this folder; run "
        f"`modman sweep --exp {','.join(needed)}` (or `modman train --all`) into it",
    )


def _from_signs(signs: list[int], good: str, bad: str) -> tuple[str, str]:
    """Combine evidence (-1 for, +1 against, 0 tie): all non-zero evidence must agree for a verdict."""
    if any(s < 0 for s in signs) and not any(s > 0 for s in signs):
        return SUPPORTED, good
    if any(s > 0 for s in signs) and not any(s < 0 for s in signs):
        return NOT_SUPPORTED, bad
    return INCONCLUSIVE, ("the measures disagree" if signs and any(signs) else "every difference is within the spread")


def _div_rate(groups: list[Group], exp: str) -> tuple[int, int]:
    runs = [r for g in groups if g.exp == exp for r in g.runs]
    return sum(r.diverged for r in runs), len(runs)


def h1(best: dict[str, Group], groups: list[Group]) -> Verdict:
    title = "H1: Muon improves training stability"
    rule = (
        "muon_all against baseline: (a) the share of their runs in this folder that diverged (every lr / weight "
        "decay / seed); (b) the largest rise of the train loss above its best value so far after warmup, at "
        f"each one's best setting (floor {SPIKE_TOL} nats). Supported when muon_all is better on one measure and "
        "not worse on the other; not supported in the mirror case; inconclusive otherwise."
    )
    miss = _missing("H1", title, rule, best, ("baseline", "muon_all"))
    if miss:
        return miss
    rows, signs = [], []
    stats = {}
    for exp in ("baseline", "muon_all", "muon_attention", "muon_ffn"):
        if exp in best:
            d, n = _div_rate(groups, exp)
            stats[exp] = (d / n, best[exp].stat(loss_spike))
            rows.append([exp, f"{d}/{n}", stats[exp][1].fmt(".3f"), best[exp].val_loss.fmt()])
    (rate_b, spike_b), (rate_m, spike_m) = stats["baseline"], stats["muon_all"]
    signs = [(rate_m > rate_b) - (rate_m < rate_b), compare(spike_m, spike_b, SPIKE_TOL)]
    verdict, reason = _from_signs(
        signs,
        "muon_all diverges less often or spikes less than baseline, and is not worse on the other measure",
        "muon_all diverges more often or spikes more than baseline",
    )
    return Verdict(
        "H1",
        title,
        rule,
        verdict,
        reason,
        ["experiment", "runs diverged", "largest loss spike", "final val loss"],
        rows,
    )


def h2(best: dict[str, Group], groups: list[Group]) -> Verdict:
    title = "H2: the Stiefel constraint prevents weight growth"
    rule = (
        "Largest ratio final / initial Frobenius norm over the attention and FFN matrices. Supported when "
        f"stiefel_all's ratio stays within 1 ± {GROWTH_TOL} and baseline's is larger beyond the spread; not "
        f"supported when stiefel_all's grows by more than {GROWTH_TOL}; inconclusive when baseline does not grow "
        "more either (there is no growth to prevent)."
    )
    miss = _missing("H2", title, rule, best, ("baseline", "stiefel_all"))
    if miss:
        return miss
    rows = [
        [e, best[e].stat(norm_growth).fmt(".3f"), best[e].val_loss.fmt()]
        for e in ("baseline", "stiefel_all", "spectral_all", "manifold_muon")
        if e in best
    ]
    g_s, g_b = best["stiefel_all"].stat(norm_growth), best["baseline"].stat(norm_growth)
    header = ["experiment", "norm growth (max final/initial)", "final val loss"]
    if math.isnan(g_s.mean) or math.isnan(g_b.mean):
        return Verdict("H2", title, rule, INCONCLUSIVE, "the runs have no spectra.jsonl", header, rows)
    if g_s.mean > 1 + GROWTH_TOL:
        return Verdict("H2", title, rule, NOT_SUPPORTED, f"stiefel_all's norms grew by {g_s.mean:.3f}x", header, rows)
    if compare(g_b, g_s, GROWTH_TOL) > 0:
        return Verdict(
            "H2",
            title,
            rule,
            SUPPORTED,
            f"baseline's norms grew {g_b.mean:.3f}x, stiefel_all's {g_s.mean:.3f}x",
            header,
            rows,
        )
    return Verdict(
        "H2",
        title,
        rule,
        INCONCLUSIVE,
        "baseline's norms did not grow more than stiefel_all's beyond the spread",
        header,
        rows,
    )


def h3(best: dict[str, Group], groups: list[Group]) -> Verdict:
    title = "H3: attention benefits more than FFN from Muon / Stiefel"
    rule = (
        "Final val loss of X_attention against X_ffn for X = muon and X = stiefel (the benefit over baseline is "
        f"baseline − X; floor {LOSS_TOL} nats). Supported when the attention-only run is lower in every available "
        "pair; not supported when the FFN-only run is lower in every pair; inconclusive otherwise. Note the FFN "
        "holds 3/4 of the matrices' parameters in the built-in model, so it has more to gain."
    )
    pairs = [
        (f"{x}_attention", f"{x}_ffn") for x in ("muon", "stiefel") if f"{x}_attention" in best and f"{x}_ffn" in best
    ]
    if not pairs:
        miss = _missing("H3", title, rule, best, ("muon_attention", "muon_ffn", "stiefel_attention", "stiefel_ffn"))
        assert miss is not None  # no complete pair: some of them are absent
        return miss
    base = best.get("baseline")
    rows, signs = [], []
    for a, f in pairs:
        va, vf = best[a].val_loss, best[f].val_loss
        for name, v in ((a, va), (f, vf)):
            gain = f"{base.val_loss.mean - v.mean:+.3f}" if base and math.isfinite(v.mean) else "-"
            rows.append([name, v.fmt(), gain])
        signs.append(compare(va, vf, LOSS_TOL))
    if all(x < 0 for x in signs):
        verdict, reason = SUPPORTED, "the attention-only run has the lower loss in every pair"
    elif all(x > 0 for x in signs):
        verdict, reason = NOT_SUPPORTED, "the FFN-only run has the lower loss in every pair"
    else:
        verdict, reason = (
            INCONCLUSIVE,
            (
                "the pairs disagree"
                if any(x < 0 for x in signs) and any(x > 0 for x in signs)
                else "in some pair the difference is within the spread"
            ),
        )
    return Verdict("H3", title, rule, verdict, reason, ["experiment", "final val loss", "gain over baseline"], rows)


def h4(best: dict[str, Group], groups: list[Group]) -> Verdict:
    title = "H4: manifold Muon is the best of both worlds"
    rule = (
        "manifold_muon against muon_all and stiefel_all. Supported when its final val loss is not above the "
        f"better of the two beyond the spread (floor {LOSS_TOL}) and its largest loss spike is not above either's; "
        "not supported when its loss is above the better one's beyond the spread; inconclusive otherwise."
    )
    miss = _missing("H4", title, rule, best, ("manifold_muon", "muon_all", "stiefel_all"))
    if miss:
        return miss
    rows = [
        [
            e,
            best[e].val_loss.fmt(),
            best[e].stat(loss_spike).fmt(".3f"),
            f"{best[e].tokens_per_sec.mean:.0f}",
            relative_speed(best[e], best),
        ]
        for e in ("muon_all", "stiefel_all", "manifold_muon")
    ]
    header = ["experiment", "final val loss", "largest loss spike", "tokens/s", "vs baseline"]
    mm = best["manifold_muon"]
    other = min(("muon_all", "stiefel_all"), key=lambda e: best[e].val_loss.mean)
    if compare(mm.val_loss, best[other].val_loss, LOSS_TOL) > 0:
        return Verdict(
            "H4",
            title,
            rule,
            NOT_SUPPORTED,
            f"{other} reaches a lower val loss ({best[other].val_loss.fmt()} vs {mm.val_loss.fmt()})",
            header,
            rows,
        )
    spike = mm.stat(loss_spike)
    if any(compare(spike, best[e].stat(loss_spike), SPIKE_TOL) > 0 for e in ("muon_all", "stiefel_all")):
        return Verdict(
            "H4", title, rule, INCONCLUSIVE, "its loss is as good as the better one's but it spikes more", header, rows
        )
    return Verdict(
        "H4",
        title,
        rule,
        SUPPORTED,
        f"its loss is not above {other}'s beyond the spread and it spikes no more than either",
        header,
        rows,
    )


def h5(best: dict[str, Group], groups: list[Group]) -> Verdict:
    title = "H5: weight decay is unnecessary with Stiefel"
    rule = (
        "For each Stiefel-constrained experiment run both with weight_decay 0 and > 0 (best setting of each): "
        f"final val loss without decay against with it (floor {LOSS_TOL}). Supported when no decay is never worse "
        "beyond the spread; not supported when it is worse for some experiment. Decay acts on the unconstrained "
        "parameters (embeddings, head, AdamW matrices) — the constrained ones need none."
    )
    rows, signs = [], []
    for exp in STIEFEL_EXPS + ("baseline",):
        zero = [g for g in groups if g.exp == exp and g.settings.get("weight_decay") == 0]
        some = [g for g in groups if g.exp == exp and (g.settings.get("weight_decay") or 0) > 0]
        if not (zero and some):
            continue
        z = min(zero, key=lambda g: g.val_loss.mean).val_loss
        s = min(some, key=lambda g: g.val_loss.mean).val_loss
        rows.append([exp + (" (control)" if exp == "baseline" else ""), z.fmt(), s.fmt()])
        if exp != "baseline":
            signs.append(compare(z, s, LOSS_TOL))
    if not signs:
        return Verdict(
            "H5",
            title,
            rule,
            INCONCLUSIVE,
            "no Stiefel experiment was run both with and without weight decay; run `modman tune` (its "
            "--no-decay phase) or `modman sweep --exp stiefel_all,manifold_muon,baseline --weight-decays 0,0.1` "
            "into this folder",
            ["experiment", "val loss, wd 0", "val loss, wd > 0"],
            rows,
        )
    if any(s > 0 for s in signs):
        return Verdict(
            "H5",
            title,
            rule,
            NOT_SUPPORTED,
            "without weight decay the loss is higher beyond the spread",
            ["experiment", "val loss, wd 0", "val loss, wd > 0"],
            rows,
        )
    return Verdict(
        "H5",
        title,
        rule,
        SUPPORTED,
        "without weight decay the loss is never higher beyond the spread",
        ["experiment", "val loss, wd 0", "val loss, wd > 0"],
        rows,
    )


def judge_all(best: dict[str, Group], groups: list[Group]) -> list[Verdict]:
    return [h(best, groups) for h in (h1, h2, h3, h4, h5)]
