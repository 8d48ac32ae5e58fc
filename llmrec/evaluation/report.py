"""The evaluation report: one markdown and one self-contained HTML page, with PNG plots.

Written to the evaluation folder (`eval.out`): report.md, report.html, plots/*.png — ready to
log to MLflow and to show as a Prefect artifact. matplotlib draws off-screen (Agg): no display,
no browser, no network.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np

from llmrec.evaluation.results import EvalReport

SHOWN = ["auc", "mrr", "ndcg@5", "ndcg@10", "hr@10", "coverage@10", "pop_bias@10"]


def _fmt(value: float, interval: tuple[float, float] | None = None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def metrics_table(report: "EvalReport", protocol: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (ranker first, model and champion on top) of one protocol's metrics with intervals."""
    result = report.protocols[protocol]
    columns = [c for c in SHOWN if any(c in m for m in result.metrics.values())]
    order = sorted(result.metrics, key=lambda r: (r not in ("model", "champion"), r != "model", -result.metrics[r].get(report.primary, 0)))
    rows = []
    for ranker in order:
        m, ci = result.metrics[ranker], result.intervals.get(ranker, {})
        rows.append([ranker, *(_fmt(m.get(c, float("nan")), ci.get(c)) for c in columns)])
    return ["ranker", *columns], rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _comparison_lines(report: "EvalReport") -> list[str]:
    lines = []
    for name, comp in report.comparisons.items():
        lines.append(
            f"- **model − {name.removeprefix('vs_')}** on {comp['metric']}: {comp['difference']:+.4f} "
            f"({comp['confidence']:.0%} paired-bootstrap interval [{comp['low']:+.4f}, {comp['high']:+.4f}], "
            f"{comp['impressions']} impressions)"
        )
    return lines


def _warm_cold_lines(report: "EvalReport") -> list[str]:
    """Warm items (seen in training: collaborative signal exists) vs cold ones (text only), per protocol."""
    table = report.warm_cold
    if table.empty:
        return []
    lines = ["", f"### Warm and cold items ({report.primary})", "",
             "An impression is *warm* when its positive item was consumed or seen in training (collaborative "
             "filters know it), *cold* otherwise (only its text is known)."]
    for protocol, part in table.groupby("protocol", sort=False):
        pivot = part.pivot_table(index="ranker", columns="segment", values="value", sort=False)
        counts = part.drop_duplicates("segment").set_index("segment")["n"]
        header = ["ranker", *(f"{c} (n={int(counts[c])})" for c in pivot.columns)]
        lines += ["", f"Protocol {protocol}:", "", *_md_table(header, [[r, *(_fmt(v) for v in pivot.loc[r])] for r in pivot.index])]
        comps = [c for c in report.warm_cold_comparisons if c["protocol"] == protocol]
        if comps:
            lines += [""] + [
                f"- {c['segment']}: model − {c['versus']} = {c['difference']:+.4f} "
                f"[{c['low']:+.4f}, {c['high']:+.4f}] ({c['confidence']:.0%} paired bootstrap, {c['impressions']} impressions)"
                for c in comps
            ]
    return lines


def _baseline_lines(report: "EvalReport") -> list[str]:
    """Each baseline's chosen setting and training length (chosen on the model's validation slice)."""
    return [f"- **{name}**: {setting}" for name, setting in report.baselines.items()]


def to_markdown(report: "EvalReport", plots: dict[str, str] | None = None) -> str:
    """The report as markdown (plots referenced by relative path)."""
    lines = ["## Holdout evaluation", ""]
    h = report.holdout
    lines.append(
        f"Split: {h.get('split', '?')}; {h.get('impressions', '?')} holdout impressions scored "
        f"(cutoff {h.get('cutoff', '?')}). Values are means with {report.confidence:.0%} bootstrap intervals."
    )
    training = h.get("training") or {}
    if training.get("under_trained"):
        lines += ["", f"> **The model is {training.get('note')}.** Its figures are those of an unfinished training: "
                  "a longer train.max_minutes or a less loaded machine gives the model it was meant to be."]
    elif training.get("note"):
        lines += ["", f"Training: {training['note']}."]
    for name, result in report.protocols.items():
        lines += ["", f"### Protocol: {name}", "", result.description, ""]
        lines += _md_table(*metrics_table(report, name))
        skipped = f"; {result.skipped} impression(s) without a positive and a negative skipped" if result.skipped else ""
        lines += ["", f"{result.n_impressions} impressions, {result.n_candidates:,} candidates{skipped}."]
        if name == "catalogue":
            lines += [
                "coverage@10 = share of the catalogue that appears in some top-10; pop_bias@10 = mean popularity "
                "percentile (0..1, training clicks) of the recommended items (0.5 = as popular as a random item)."
            ]
    if report.comparisons:
        lines += ["", "### Comparisons", "", *_comparison_lines(report)]
    if report.baselines:
        lines += ["", "### Baselines", "", "Settings chosen on the validation slice the model validates on (the last training "
                  "consumption of the most recent users), each baseline then refitted on the whole training slice:", "",
                  *_baseline_lines(report)]
    if not report.segments.empty:
        lines += ["", f"### Segments ({report.primary}, protocol {report.segment_protocol})", ""]
        seg = report.segments
        pivot = seg.pivot_table(index=["kind", "segment", "n"], columns="ranker", values="value", sort=False).reset_index()
        rankers = [c for c in pivot.columns if c not in ("kind", "segment", "n")]
        rows = [[r["kind"], str(r["segment"]), str(int(r["n"])), *(_fmt(r[k]) for k in rankers)] for _, r in pivot.iterrows()]
        lines += _md_table(["segment kind", "segment", "impressions", *rankers], rows)
    lines += _warm_cold_lines(report)
    if plots:
        lines += ["", "### Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()]
    return "\n".join(lines) + "\n"


def to_html(report: "EvalReport", plot_files: dict[str, Path]) -> str:
    """A self-contained HTML page (plots embedded as base64 PNG)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>llmrec evaluation</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}tr:first-child td{font-weight:600}img{max-width:100%}",
        "</style></head><body><h1>llmrec holdout evaluation</h1>",
    ]
    h = report.holdout
    parts.append(f"<p>Split: {html.escape(str(h.get('split', '?')))}; cutoff {html.escape(str(h.get('cutoff', '?')))}. "
                 f"Means with {report.confidence:.0%} bootstrap intervals.</p>")
    training = h.get("training") or {}
    if training.get("note"):
        strong = training.get("under_trained")
        parts.append(f"<p>{'<b>The model is ' if strong else 'Training: '}{html.escape(str(training['note']))}{'.</b>' if strong else '.'}</p>")
    for name, result in report.protocols.items():
        header, rows = metrics_table(report, name)
        parts.append(f"<h2>Protocol: {html.escape(name)}</h2><p>{html.escape(result.description)}</p><table>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append(f"</table><p>{result.n_impressions} impressions, {result.n_candidates:,} candidates.</p>")
    if report.comparisons:
        parts.append("<h2>Comparisons</h2><ul>")
        parts += [f"<li>{html.escape(line[2:]).replace('**', '')}</li>" for line in _comparison_lines(report)]
        parts.append("</ul>")
    if report.baselines:
        parts.append("<h2>Baselines</h2><p>Settings chosen on the validation slice the model validates on, each baseline then "
                     "refitted on the whole training slice.</p><ul>")
        parts += [f"<li><b>{html.escape(name)}</b>: {html.escape(setting)}</li>" for name, setting in report.baselines.items()]
        parts.append("</ul>")
    for title, path in plot_files.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def draw_plots(report: "EvalReport", folder: Path) -> dict[str, Path]:
    """PNG plots: nDCG@k over k, metric by segment, score distributions of the model. Title -> file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if not report.ndcg_curve.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        for ranker, g in report.ndcg_curve.groupby("ranker", sort=False):
            ax.plot(g["k"], g["ndcg"], marker="o", markersize=3, label=ranker, linewidth=2.5 if ranker == "model" else 1.2)
        ax.set(xlabel="k", ylabel="nDCG@k", title=f"nDCG@k over k ({report.segment_protocol})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        out["nDCG@k over k"] = _save(fig, folder / "ndcg_at_k.png")
    if not report.segments.empty:
        fig = segment_figure(report)
        out["Metric by segment"] = _save(fig, folder / "segments.png")
    if report.score_samples is not None and not report.score_samples.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        s = report.score_samples
        bins = np.histogram_bin_edges(s["score"], bins=40)
        for label, name in ((0, "not clicked / negative"), (1, "clicked / positive")):
            ax.hist(s.loc[s["label"] == label, "score"], bins=bins, alpha=0.6, density=True, label=name)
        ax.set(xlabel="model score", ylabel="density", title="Model score distribution on the holdout")
        ax.legend()
        out["Score distributions"] = _save(fig, folder / "scores.png")
    return out


def segment_figure(report: "EvalReport"):
    """Bars of the primary metric per segment, one panel per segment kind, the legend right of the panels."""
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(report.segments["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds) + 1.5, 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        seg = report.segments[report.segments["kind"] == kind]
        pivot = seg.pivot_table(index="segment", columns="ranker", values="value", sort=False)
        pivot.plot.bar(ax=ax, rot=30, legend=False, width=0.8)
        ax.set(title=kind, ylabel=report.primary, xlabel="")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{report.primary} by segment")
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))  # room on the right: the legend never covers bars
    fig.legend(handles, labels, fontsize=7, loc="center right", title="ranker")
    return fig


def _save(fig, path: Path) -> Path:
    if not fig.legends:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_report(report: "EvalReport", folder: str | Path) -> dict[str, Path]:
    """report.md + report.html + plots/ under `folder`; returns the written paths."""
    folder = Path(folder)
    plots = draw_plots(report, folder / "plots")
    md = to_markdown(report, {t: p.relative_to(folder).as_posix() for t, p in plots.items()})
    (folder / "report.md").write_text(md)
    (folder / "report.html").write_text(to_html(report, plots))
    return {"markdown": folder / "report.md", "html": folder / "report.html", **{p.stem: p for p in plots.values()}}


def save_report(report: EvalReport, folder: str | Path) -> dict[str, Path]:
    """metrics.json, per-impression Parquet, report.md, report.html and plots/ under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "metrics": report.metrics,
        "protocol": report.segment_protocol,
        "protocols": {name: p.to_dict() for name, p in report.protocols.items()},
        "comparisons": report.comparisons,
        "segments": report.segments.to_dict(orient="records"),
        "warm_cold": report.warm_cold.to_dict(orient="records"),
        "warm_cold_comparisons": report.warm_cold_comparisons,
        "holdout": report.holdout,
        "baselines": report.baselines,
    }
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, default=float))
    for protocol in report.protocols.values():
        for name, frame in protocol.per_impression.items():
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
            frame.to_parquet(folder / f"per_impression_{protocol.name}_{safe}.parquet", index=False)
    return write_report(report, folder)
