"""Markdown for `lab finetune newari`: one run's report, and the `--method all` comparison."""

from __future__ import annotations

SILVER = ("Data: the shipped English-Newari corpus, split 80/10/10 by a hash of the English side. "
          "Its sentence pairs are silver (partly machine-translated; see labcli/data/newari/README.md): "
          "compare methods with these scores, do not read them as human-reference quality.")


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _scores_table(groups: dict) -> str:
    return _table(["group", "n", "BLEU", "chrF++", "TER"],
                  [[g, s["n"], s["bleu"], s["chrf++"], s["ter"]] for g, s in groups.items()])


def render(ctx, cfg, summary: dict) -> str:
    parts = [f"# lab finetune newari: {summary.get('model')} ({summary.get('method')})", "", SILVER, "",
             f"Decoding: max {cfg.max_target_len} new tokens, no_repeat_ngram_size {cfg.eval.no_repeat_ngram_size}.", ""]
    if "trainable_params" in summary:
        parts += ["## Training", "", _table(["trainable params", "total params", "weight bytes", "steps", "final loss",
                                             "eval loss", "tokens/s", "wall s", "peak memory MB"],
                                            [[f"{summary['trainable_params']:,}", f"{summary['total_params']:,}",
                                              f"{summary['weight_bytes']:,}", summary["steps"],
                                              f"{summary['final_loss']:.4f}",
                                              f"{summary['eval_loss']:.4f}" if summary.get("eval_loss") else "-",
                                              summary["tokens_per_s"], summary["wall_s"], summary["peak_memory_mb"]]]),
                  "", "![loss](loss.png)", ""]
    if summary.get("untrained"):
        u = summary["untrained"]
        parts += [f"Untrained model (greedy, same test set): BLEU {u['bleu']}, chrF++ {u['chrf++']}, TER {u['ter']}.", ""]
    for decoding, s in summary["scores"].items():
        parts += [f"## Test scores, {decoding} decoding", "", "By domain:", "", _scores_table(s["by_domain"]), "",
                  "By source length:", "", _scores_table(s["by_length"]), "",
                  "Error rates (share of test sentences):", "",
                  _table(list(s["errors"]["rates"]) + ["length ratio mean", "median"],
                         [list(s["errors"]["rates"].values()) + [s["errors"]["length_ratio_mean"],
                                                                 s["errors"]["length_ratio_median"]]]), ""]
    sig = next(iter(summary["scores"].values()))["by_domain"]["all"]
    parts += ["Signatures: " + "; ".join(f"`{sig[k + '_signature']}`" for k in ("bleu", "chrf++", "ter")), "",
              "![scores by domain](scores_by_domain.png)", ""]
    worst = next(iter(summary["scores"].values()))["worst"]
    if worst:
        parts += ["## Worst sentences by domain (sentence chrF++)", ""]
        for domain, recs in worst.items():
            parts += [f"### {domain}", "", _table(["chrF++", "source", "reference", "hypothesis"],
                                                  [[r["chrf++"], r["src"], r["ref"], r["hyp"] or "(empty)"] for r in recs]), ""]
    return "\n".join(parts)


def comparison_table(summaries: dict[str, dict]) -> str:
    """The `--method all` table: cost and quality per method, overall and per domain (chrF++)."""
    first = next(iter(summaries.values()))
    domains = sorted(d for d in main_scores(first)["by_domain"] if d != "all")
    headers = ["method", "trainable", "total", "weight MB", "peak MB", "tokens/s", "wall s", "BLEU", "chrF++", "TER"]
    headers += [f"chrF++ {d}" for d in domains]
    rows = []
    for method, s in summaries.items():
        scores = main_scores(s)
        rows.append([method, f"{s['trainable_params']:,}", f"{s['total_params']:,}", f"{s['weight_bytes'] / 2**20:.2f}",
                     s["peak_memory_mb"], s["tokens_per_s"], s["wall_s"], s["bleu"], s["chrf++"], s["ter"]]
                    + [scores["by_domain"][d]["chrf++"] for d in domains])
    return SILVER + "\n\n" + _table(headers, rows)


def main_scores(summary: dict) -> dict:
    """Greedy scores when they were computed, else the first decoding's."""
    return summary["scores"].get("greedy") or next(iter(summary["scores"].values()))
