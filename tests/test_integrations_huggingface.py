"""attach(trainer): FER and LoCal act inside a Hugging Face Trainer and give the plain loop's numbers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from advanced_optimizers import FERLoss, IndexedDataset  # noqa: E402
from advanced_optimizers.integrations.huggingface import attach  # noqa: E402
from advanced_optimizers.registry import create_optimizer  # noqa: E402

N, EPOCHS, BATCH, CLASSES = 32, 3, 4, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (two mostly wait on a small shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tokens(Dataset):
    """Hugging Face style items: token ids, a mask, a label and a column the model does not take."""

    def __init__(self, n: int = N, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 6), generator=g)
        self.labels = self.ids[:, 0] % CLASSES  # learnable from the first token

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(6, dtype=torch.long),
            "labels": self.labels[i],
            "text": f"sample {i}",  # removed by the Trainer (not a forward argument)
        }


def tiny_bert() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=CLASSES,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


class MLPConfig(PretrainedConfig):
    model_type = "advopt-test-mlp"

    def __init__(self, features: int = 8, hidden: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.features, self.hidden = features, hidden


class MLP(PreTrainedModel):
    """A tiny Sequential classifier as a PreTrainedModel (LoCal needs Linear layers in order)."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        h = config.hidden
        self.net = nn.Sequential(
            nn.Linear(config.features, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 3)
        )

    def forward(self, features, labels=None):
        logits = self.net(features)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Features(Dataset):
    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g)
        self.x[:, 0] += 2.0 * self.y

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"features": self.x[i], "labels": self.y[i]}


class InOrder(Trainer):
    """Batches in dataset order, so that the plain loop can replay them."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def arguments(tmp_path, accumulate: int = 1, **overrides) -> TrainingArguments:
    options = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": BATCH,
        "gradient_accumulation_steps": accumulate,
        "num_train_epochs": EPOCHS,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        **overrides,
    }
    return TrainingArguments(**options)


def max_difference(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def fer_adam(model):
    return create_optimizer(
        "fer-adam", model, lr=1e-2, memory_size=N, epochs=EPOCHS, consistency_threshold=0.0
    )


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fer_optimizer_matches_the_plain_loop(tmp_path, accumulate: int) -> None:
    torch.manual_seed(0)
    model = tiny_bert()
    plain = copy.deepcopy(model)
    optimizer = fer_adam(model)
    data = IndexedDataset(Tokens())
    trainer = attach(
        InOrder(
            model=model,
            args=arguments(tmp_path, accumulate),
            train_dataset=data,
            optimizers=(optimizer, None),
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "FER is inactive"
        trainer.train()
    assert optimizer.ever_correct.any() and optimizer.epoch == EPOCHS
    assert any("fer_flagged" in entry for entry in trainer.state.log_history)

    reference = fer_adam(plain)
    plain.train()
    for epoch in range(1, EPOCHS + 1):
        reference.set_epoch(epoch, EPOCHS)
        for k, batch in enumerate(DataLoader(data, batch_size=BATCH)):
            logits = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = reference.fer_loss(logits.logits, batch["labels"], batch["index"])
            (loss / accumulate).backward()
            if k % accumulate == accumulate - 1:
                reference.step()
                reference.zero_grad()
    assert torch.equal(reference.ever_correct, optimizer.ever_correct)
    assert max_difference(model, plain) < 1e-5


def test_fer_loss_with_the_trainers_own_optimizer(tmp_path) -> None:
    torch.manual_seed(1)
    criterion = FERLoss(N, consistency_threshold=0.0)  # the epochs come from the Trainer
    trainer = attach(
        Trainer(
            model=MLP(MLPConfig()),
            args=arguments(tmp_path),
            train_dataset=IndexedDataset(Features()),
        ),
        fer=criterion,
    )
    trainer.train()
    assert criterion.ever_correct.any() and criterion.epochs == EPOCHS
    assert not criterion.deferred  # the optimizer's step hook is gone after training


def localized(model):
    return create_optimizer(
        "localized-sgd",
        model,
        lr=0.05,
        selection_mode="static",
        warmup_epochs=0,
        hebbian_lr=1e-3,
        max_transition=2,
    )


def test_localized_moves_its_transition_and_matches_the_plain_loop(tmp_path) -> None:
    torch.manual_seed(2)
    model = MLP(MLPConfig())
    plain = copy.deepcopy(model)
    optimizer = localized(model)
    data = Features(2)
    trainer = attach(
        InOrder(
            model=model, args=arguments(tmp_path), train_dataset=data, optimizers=(optimizer, None)
        )
    )
    trainer.train()
    assert optimizer.transition > 0 and optimizer.hebbian_steps > 0

    reference = localized(plain)
    plain.train()
    for _ in range(EPOCHS):
        total = 0.0
        for batch in DataLoader(data, batch_size=BATCH):
            reference.zero_grad()
            loss = plain(**batch).loss
            reference.observe_loss(loss)
            loss.backward()
            reference.step()
            total += loss.item() * len(batch["labels"])
        reference.end_epoch(total / N)
    assert [h["transition"] for h in reference.history] == [
        h["transition"] for h in optimizer.history
    ]
    assert reference.gate == pytest.approx(optimizer.gate)
    assert max_difference(model, plain) < 1e-5


def test_the_index_reaches_the_loss_but_never_the_model(tmp_path) -> None:
    model = tiny_bert()
    seen: list[set[str]] = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(set(kw)), with_kwargs=True)
    trainer = attach(
        Trainer(
            model=model,
            args=arguments(tmp_path, num_train_epochs=2),
            train_dataset=IndexedDataset(Tokens()),
            eval_dataset=IndexedDataset(Tokens(8, seed=1)),
            optimizers=(fer_adam(model), None),
        )
    )
    trainer.train()
    metrics = trainer.evaluate()
    predictions = trainer.predict(IndexedDataset(Tokens(8, seed=2)))
    assert "eval_loss" in metrics and predictions.predictions.shape == (8, CLASSES)
    assert seen and all("index" not in kw and "text" not in kw for kw in seen)


def test_gradient_correction_and_mup_through_optimizers(tmp_path) -> None:
    """The plain-optimizer algorithms need no attach: optimizers=(optimizer, scheduler)."""
    model = tiny_bert()
    with torch.device("meta"):
        narrow = BertForSequenceClassification(
            BertConfig(
                vocab_size=50,
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                num_labels=CLASSES,
            )
        )
    for optimizer in (
        create_optimizer("gc-adam", model, lr=1e-3),
        create_optimizer("mup-adamw", model, lr=1e-3, base_model=narrow),
    ):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        before = [p.detach().clone() for p in model.parameters()]
        trainer = attach(
            Trainer(
                model=model,
                args=arguments(tmp_path, num_train_epochs=1),
                train_dataset=Tokens(),
                optimizers=(optimizer, scheduler),
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            trainer.train()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_misuse_is_reported(tmp_path) -> None:
    model = tiny_bert()
    trainer = attach(
        Trainer(
            model=model,
            args=arguments(tmp_path, num_train_epochs=2),
            train_dataset=Tokens(),  # not indexed
            optimizers=(fer_adam(model), None),
        )
    )
    with pytest.raises(ValueError, match="IndexedDataset"):
        trainer.train()
    with pytest.raises(RuntimeError, match="already"):
        attach(trainer)
    with pytest.raises(TypeError, match=r"transformers\.Trainer"):
        attach(model)

    class TakesIndex(MLP):
        def forward(self, features, labels=None, index=None):
            return super().forward(features, labels)

    other = Trainer(model=TakesIndex(MLPConfig()), args=arguments(tmp_path))
    with pytest.raises(ValueError, match="index"):
        attach(other)
