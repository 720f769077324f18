"""`lab distill kd`: logit distillation from a larger encoder classifier into a small one.

Hinton et al.'s loss, the DistilBERT recipe in miniature: alpha * T^2 * KL(teacher_T || student_T)
+ (1 - alpha) * cross-entropy on the labels. The teacher is a save_pretrained classifier folder, or
(`teacher=train`) a larger BERT trained here first. A same-size student trained on labels only is
the baseline. Accuracy, parameters and latency of all three; every model trains through the engine.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.runs import Run

KD_TASKS = ("sms-spam", "strategyqa")
# BERT sizes: (layers, hidden, heads, feed-forward)
SIZES = {"nano": (1, 32, 2, 64), "tiny": (2, 64, 2, 256), "mini": (4, 128, 4, 512), "small": (4, 256, 4, 1024),
         "medium": (8, 512, 8, 2048)}


RESUMABLE = True  # --resume continues from the newest checkpoint


class Config(RecipeConfig):
    task: str = Field("sms-spam", description=f"{', '.join(KD_TASKS)}")
    teacher: str = Field("train", description="A save_pretrained classifier folder (e.g. RUN/teacher), or train (a teacher_size BERT trained here)")
    teacher_size: str = Field("small", description=f"BERT size of a teacher trained here: {', '.join(SIZES)}")
    student: str = Field("tiny", description=f"Student BERT size: {', '.join(SIZES)}")
    temperature: float = Field(2.0, gt=0, description="T: softening of both distributions")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation term (1 - alpha on the labels)")
    baseline: bool = Field(True, description="Also train the student on labels only")
    max_len: int = Field(64, ge=8, description="Tokens per text")
    vocab_size: int = Field(4000, ge=100, description="Tokenizer size (trained on the training texts)")
    train_size: int | None = Field(None, ge=2, description="Training examples (default: all)")
    test_size: int | None = Field(None, ge=2, description="Test examples (default: all)")
    latency_examples: int = Field(100, ge=1, description="Single-example forwards timed per model")
    teacher_train: TrainConfig = TrainConfig(max_steps=300, batch_size=32, micro_batch_size=32, lr=5e-4, warmup_steps=20)
    train: TrainConfig = TrainConfig(max_steps=300, batch_size=32, micro_batch_size=32, lr=1e-3, warmup_steps=20)


def read_task(task: str, seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    """(train, test, label names); texts de-duplicated, split 80/20 with a fixed seed where there is no split."""
    if task == "sms-spam":
        from labcli.data import sms_spam

        texts, labels = sms_spam.read()
        rows = [(text, int(label)) for text, label in zip(texts, labels)]
        random.Random(1234).shuffle(rows)
        cut = len(rows) * 4 // 5
        return rows[:cut], rows[cut:], ["ham", "spam"]
    if task == "strategyqa":
        from labcli.reasoning.tasks import load_task

        pair = lambda split: [(e.question, int(e.answer == "yes")) for e in load_task("strategyqa", split)]  # noqa: E731
        return pair("train"), pair("test"), ["no", "yes"]
    raise UserError(f"unknown kd task '{task}'", f"one of: {', '.join(KD_TASKS)}")


def bert(size: str, tokenizer, seed: int, n_labels: int):
    from transformers import BertConfig, BertForSequenceClassification

    if size not in SIZES:
        raise UserError(f"unknown model size '{size}'", f"one of: {', '.join(SIZES)}")
    layers, hidden, heads, ffn = SIZES[size]
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=512, num_labels=n_labels,
                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg)


def encode(tokenizer, rows, max_len: int) -> list[dict]:
    out = []
    for text, label in rows:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"][:max_len - 1]
        out.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(label)})
    return out


def kd_loss(temperature: float, alpha: float):
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)."""
    import torch.nn.functional as F

    def loss_fn(model, batch) -> torch.Tensor:
        teacher = batch.pop("teacher_logits")
        out = model(**batch)
        soft = F.kl_div(F.log_softmax(out.logits / temperature, -1), F.log_softmax(teacher / temperature, -1),
                        reduction="batchmean", log_target=True) * temperature ** 2
        return alpha * soft + (1 - alpha) * out.loss

    return loss_fn


@torch.no_grad()
def logits_of(model, data, collate, device, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    out = [model(**{k: v.to(device) for k, v in collate(data[lo:lo + batch_size]).items() if k != "labels"}).logits.cpu()
           for lo in range(0, len(data), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def measure(model, data, collate, device, n_latency: int) -> dict:
    """Accuracy, spam-class F1, parameters, and single-example latency (median of n forwards)."""
    logits = logits_of(model, data, collate, device)
    labels = torch.stack([d["labels"] for d in data])
    pred = logits.argmax(-1)
    tp = int(((pred == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(int((pred == 1).sum()) + int((labels == 1).sum()), 1)
    times = []
    for d in data[:3]:  # warm-up
        model(**{k: v.to(device) for k, v in collate([d]).items() if k != "labels"})
    for d in data[:n_latency]:
        batch = {k: v.to(device) for k, v in collate([d]).items() if k != "labels"}
        t0 = time.perf_counter()
        model(**batch)
        times.append((time.perf_counter() - t0) * 1000)
    return {"accuracy": float((pred == labels).float().mean()), "f1_positive": f1,
            "params": sum(p.numel() for p in model.parameters()), "latency_ms": statistics.median(times)}


def load_teacher(path: str, device):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path).expanduser()
    if not (folder / "config.json").exists():
        raise UserError(f"teacher '{path}' is not a classifier folder (no config.json)",
                        "pass teacher=RUN/teacher from an earlier `lab distill kd`, or teacher=train")
    return AutoModelForSequenceClassification.from_pretrained(folder).to(device), AutoTokenizer.from_pretrained(folder)


def save_model(model, tokenizer, folder: Path) -> None:
    from labcli import runs

    runs.replace_dir(folder, lambda tmp: (model.save_pretrained(str(tmp)), tokenizer.save_pretrained(str(tmp))))


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import padded_collate
    from labcli.engine.distributed import pick_device
    from labcli.engine.trainer import train
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table
    from labcli.models.tokenizer import train_tokenizer
    from labcli.runs import latest_checkpoint

    device = pick_device(cfg.device)
    for size in (cfg.student, cfg.teacher_size):
        if size not in SIZES:
            raise UserError(f"unknown model size '{size}'", f"one of: {', '.join(SIZES)}")
    train_rows, test_rows, names = read_task(cfg.task, cfg.seed)
    train_rows, test_rows = train_rows[:cfg.train_size], test_rows[:cfg.test_size]

    def sub_run(name: str) -> Run:
        return ctx.sub(name, recipe=f"{ctx.recipe}-{name}", resume_from=latest_checkpoint(ctx.dir / name) if ctx.resume_from else None)

    if cfg.teacher == "train":
        tok = train_tokenizer([t for t, _ in train_rows], cfg.vocab_size)
        collate = padded_collate(tok.pad_token_id)
        train_data = encode(tok, train_rows, cfg.max_len)
        teacher = bert(cfg.teacher_size, tok, cfg.seed, len(names))
        teacher = train(teacher, train_data, collate, cfg.teacher_train, sub_run("teacher-train"), seed=cfg.seed, device=device).model
        save_model(teacher, tok, ctx.path("teacher"))
        teacher_name = f"BERT-{cfg.teacher_size} (trained here)"
    else:
        teacher, tok = load_teacher(cfg.teacher, device)
        if teacher.config.num_labels != len(names):
            raise UserError(f"teacher has {teacher.config.num_labels} labels but {cfg.task} has {len(names)}",
                            "pass a teacher trained on this task")
        collate = padded_collate(tok.pad_token_id)
        train_data = encode(tok, train_rows, cfg.max_len)
        teacher_name = cfg.teacher
    test_data = encode(tok, test_rows, cfg.max_len)
    teacher_logits = logits_of(teacher.to(device), train_data, collate, device)
    kd_data = [{**d, "teacher_logits": t} for d, t in zip(train_data, teacher_logits)]

    student = train(bert(cfg.student, tok, cfg.seed, len(names)), kd_data, collate, cfg.train, ctx, seed=cfg.seed,
                    device=device, loss_fn=kd_loss(cfg.temperature, cfg.alpha)).model
    save_model(student, tok, ctx.path("model"))
    rows = {f"teacher {teacher_name}": measure(teacher, test_data, collate, device, cfg.latency_examples)}
    if cfg.baseline:
        plain = train(bert(cfg.student, tok, cfg.seed, len(names)), train_data, collate, cfg.train, sub_run("student-labels"),
                      seed=cfg.seed, device=device).model
        rows[f"student BERT-{cfg.student}, labels only"] = measure(plain, test_data, collate, device, cfg.latency_examples)
    rows[f"student BERT-{cfg.student}, KD (T={cfg.temperature:g}, alpha={cfg.alpha:g})"] = measure(
        student, test_data, collate, device, cfg.latency_examples)

    summary = {"task": cfg.task, "train_examples": len(train_rows), "test_examples": len(test_rows), "seed": cfg.seed,
               "temperature": cfg.temperature, "alpha": cfg.alpha, "results": rows}
    ctx.write_summary(summary)
    plots.bars({k.split(",")[-1].strip()[:28]: {"accuracy": r["accuracy"]} for k, r in rows.items()}, ctx.path("accuracy.png"),
               f"{cfg.task}: {len(test_rows)} test texts", "accuracy")
    plots.curves(ctx.metrics(), ["loss"], ctx.path("loss.png"), "student KD loss")
    table = [{"model": k, "parameters": r["params"], "accuracy": r["accuracy"], f"F1 ({names[1]})": r["f1_positive"],
              "latency ms": r["latency_ms"]} for k, r in rows.items()]
    ctx.write_report(
        f"# lab distill kd: {cfg.task}\n\n{len(train_rows)} training and {len(test_rows)} test texts, seed {cfg.seed}, "
        f"device {device.type}. Latency: median of {cfg.latency_examples} single-text forwards.\n\n"
        f"{markdown_table(table)}\n![accuracy](accuracy.png)\n\n![loss](loss.png)\n")
    print_table(table, title=f"lab distill kd: {cfg.task}, {len(test_rows)} test texts")
