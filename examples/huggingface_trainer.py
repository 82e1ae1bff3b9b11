"""The library's optimizers in a Hugging Face ``Trainer``: FER through one line, GC and μP as they are.

    python examples/huggingface_trainer.py           # a small BERT on a synthetic token task
    python examples/huggingface_trainer.py --smoke   # a tiny one: seconds

The model is built from a config (nothing is downloaded). Three runs:

- ``fer-adam``: ``attach(Trainer(...))`` keeps the ``"index"`` column of ``IndexedDataset`` and
  computes FER's loss from the model's logits;
- ``gc-adam`` and ``mup-adamw``: plain optimizers, passed as ``optimizers=(optimizer, scheduler)``
  (μP's hyperparameters "tuned" on a narrow proxy, given as ``base_model``).

Needs ``pip install 'advanced_optimizers[integrations]'``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from advanced_optimizers import IndexedDataset
from advanced_optimizers.integrations.huggingface import attach
from advanced_optimizers.registry import create_optimizer

CLASSES, VOCAB, LENGTH = 4, 64, 12


class TokenTask(Dataset):
    """Sequences of random tokens; the label is which quarter of the vocabulary token 0 is in."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.labels = self.ids[:, 0] * CLASSES // VOCAB

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def bert(hidden: int, device: str | None = None) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=1 if hidden <= 16 else 2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        num_labels=CLASSES,
    )
    with torch.device(device or "cpu"):
        return BertForSequenceClassification(config)


def run(name: str, train: Dataset, test: Dataset, hidden: int, epochs: int, out: str) -> str:
    torch.manual_seed(0)
    model = bert(hidden)
    args = TrainingArguments(
        output_dir=out,
        num_train_epochs=epochs,
        per_device_train_batch_size=16 if len(train) <= 256 else 32,
        per_device_eval_batch_size=128,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    if name == "fer-adam":
        optimizer = create_optimizer(
            name,
            model,
            lr=5e-3,
            memory_size=len(train),  # one store row per training sample
            epochs=epochs,
            consistency_threshold=0.0,  # the official code's rule: every correct prediction counts
        )
        trainer = attach(  # the one line: FER inside the Trainer
            Trainer(
                model=model,
                args=args,
                train_dataset=IndexedDataset(train),
                eval_dataset=test,
                optimizers=(optimizer, None),
            )
        )
    else:
        if name == "mup-adamw":  # hyperparameters tuned on a width-16 proxy (built on meta)
            proxy = bert(16, device="meta")
            optimizer = create_optimizer(name, model, lr=5e-3, base_model=proxy)
        else:
            optimizer = create_optimizer(name, model, lr=5e-3)
        steps = epochs * -(-len(train) // args.per_device_train_batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=test,
            optimizers=(optimizer, scheduler),
        )
    trainer.remove_callback(PrinterCallback)  # quiet: the summary line below says it all
    trainer.train()
    metrics = trainer.evaluate()
    extra = ""
    if name == "fer-adam":
        summary = optimizer.store_summary()
        extra = f", FER store {summary['fer_flagged']:.0%} flagged"
    predictions = trainer.predict(test)
    accuracy = (predictions.predictions.argmax(1) == predictions.label_ids).mean()
    return f"{name:10s} eval loss {metrics['eval_loss']:.3f}, accuracy {accuracy:.3f}{extra}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny model and data (seconds)")
    cli = parser.parse_args(argv)
    n_train, n_test, hidden, epochs = (256, 64, 16, 3) if cli.smoke else (4096, 512, 64, 4)
    hf_logging.set_verbosity_error()
    train, test = TokenTask(n_train, seed=0), TokenTask(n_test, seed=1)
    print(f"BERT (hidden {hidden}) on {n_train} sequences, {epochs} epochs")
    with tempfile.TemporaryDirectory() as out:
        for name in ("fer-adam", "gc-adam", "mup-adamw"):
            print(run(name, train, test, hidden, epochs, out), flush=True)


if __name__ == "__main__":
    main()
