"""Long-tail remedies against closed forms, class priors through the CLI, soft prompts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, SHARED_DATA, prompt_batch, require_split

from lt_tuning import CMIDDataModule, ClsTuningModule, PromptTuningModule, Verbalizer
from lt_tuning.commands.lightning import build_cli
from lt_tuning.models import classification_loss
from lt_tuning.models.remedies import class_balanced_weights, log_prior, logit_adjust, tau_normalize

COUNTS = [6, 3, 1]


def test_log_prior_is_log_frequency_with_empty_class_at_half():
    torch.testing.assert_close(log_prior([6, 3, 1, 0]), torch.tensor([6, 3, 1, 0.5]).div(10.5).log())


def test_logit_adjusted_loss_closed_form():
    logits, target = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])
    loss = classification_loss(logit_adjust(logits, log_prior(COUNTS), tau=1.0), target)
    pi = [0.6, 0.3, 0.1]
    expected = -math.log(pi[0] * math.e / (pi[0] * math.e + pi[1] * math.e**2 + pi[2]))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    loss_tau2 = classification_loss(logit_adjust(logits, log_prior(COUNTS), tau=2.0), target)
    expected_tau2 = -math.log(pi[0] ** 2 * math.e / (pi[0] ** 2 * math.e + pi[1] ** 2 * math.e**2 + pi[2] ** 2))
    assert float(loss_tau2) == pytest.approx(expected_tau2, rel=1e-6)


def test_class_balanced_weights_closed_form():
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in (100, 10, 1)]
    expected = torch.tensor([3 * w / sum(raw) for w in raw])
    torch.testing.assert_close(class_balanced_weights([100, 10, 1], beta), expected)
    torch.testing.assert_close(class_balanced_weights([100, 10, 1], 0.0), torch.ones(3))
    torch.testing.assert_close(class_balanced_weights([5, 0], 0.5), class_balanced_weights([5, 1], 0.5))
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights([1, 2], 1.0)


def test_class_weighted_loss_is_the_batch_mean_of_weighted_losses():
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 1])
    weights = torch.tensor([0.5, 1.5])
    per_example = F.cross_entropy(logits, target, reduction="none")
    expected = (per_example * torch.tensor([0.5, 1.5, 1.5])).sum() / 3
    torch.testing.assert_close(classification_loss(logits, target, class_weights=weights), expected)


def test_tau_normalize_closed_form():
    logits, norms = torch.tensor([[4.0, 1.0]]), torch.tensor([4.0, 1.0])
    torch.testing.assert_close(tau_normalize(logits, norms, 1.0), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(tau_normalize(logits, norms, 0.5), torch.tensor([[2.0, 1.0]]))


def test_remedies_need_priors(tiny_bert_dir):
    with pytest.raises(ValueError, match="train_class_counts"):
        ClsTuningModule(tiny_bert_dir, 3, logit_adjustment="loss")
    with pytest.raises(ValueError, match="train_class_counts"):
        PromptTuningModule(tiny_bert_dir, 3, class_balanced_beta=0.99)


def _prompt_module(tiny_bert_dir, **kwargs) -> PromptTuningModule:
    torch.manual_seed(0)
    module = PromptTuningModule(tiny_bert_dir, 3, verbalizer=Verbalizer.from_token_ids([[10], [11, 12], [13, 14, 15]]), **kwargs)
    return module.eval()


def test_prompt_module_inference_remedies_closed_form(tiny_bert_dir):
    plain = _prompt_module(tiny_bert_dir)
    batch = prompt_batch(plain.mlm.config.vocab_size)
    with torch.no_grad():
        raw = plain(batch)
        embeddings = plain.mlm.get_output_embeddings().weight
        norms = torch.stack([embeddings[ids].mean(0).norm() for ids in ([10], [11, 12], [13, 14, 15])])
        torch.testing.assert_close(plain.class_weight_norms(), norms)
        tau = _prompt_module(tiny_bert_dir, tau_norm=0.7)
        tau.load_state_dict(plain.state_dict())
        torch.testing.assert_close(tau(batch), raw / norms**0.7)
        posthoc = _prompt_module(tiny_bert_dir, logit_adjustment="posthoc", logit_adjustment_tau=1.5,
                                 train_class_counts=COUNTS)
        posthoc.load_state_dict(plain.state_dict())
        torch.testing.assert_close(posthoc(batch), raw - 1.5 * torch.tensor([0.6, 0.3, 0.1]).log())
        posthoc.train()  # post-hoc adjustment never touches training logits
        torch.manual_seed(3)
        train_logits = posthoc(batch)
        plain.train()
        torch.manual_seed(3)
        torch.testing.assert_close(train_logits, plain(batch))


def test_training_step_applies_loss_remedies(tiny_bert_dir):
    module = ClsTuningModule(tiny_bert_dir, 3, dropout=0.0, logit_adjustment="loss", logit_adjustment_tau=1.0,
                             class_balanced_beta=0.5, train_class_counts=COUNTS)
    module.log = lambda *args, **kwargs: None  # no trainer attached
    batch = prompt_batch(module.encoder.config.vocab_size)
    batch.pop("mask_positions")
    torch.manual_seed(5)
    loss = module.training_step(batch, 0)
    torch.manual_seed(5)
    logits = module.class_scores(batch) + torch.tensor([0.6, 0.3, 0.1]).log()
    raw = [(1 - 0.5) / (1 - 0.5**n) for n in COUNTS]
    weights = torch.tensor([3 * w / sum(raw) for w in raw])
    expected = (F.cross_entropy(logits, batch["labels"], reduction="none") * weights[batch["labels"]]).mean()
    torch.testing.assert_close(loss, expected)


def test_cli_links_class_priors_from_the_datamodule(tiny_bert_dir, tmp_path):
    require_split("cmid", "train")
    cli = build_cli([
        "--config", str(ROOT / "examples" / "data" / "cmid.yaml"),
        "--config", str(ROOT / "examples" / "methods" / "prompt_tuning_logit_adjusted.yaml"),
        "--data.init_args.data_dir", str(SHARED_DATA / "cmid"), "--data.init_args.model_name_or_path", tiny_bert_dir,
        "--data.init_args.cache_dir", str(tmp_path),
    ], run=False)
    counts = cli.datamodule.class_counts("train")
    assert sum(counts) == 8578
    assert list(cli.model.hparams.train_class_counts) == counts
    torch.testing.assert_close(cli.model.class_log_prior, log_prior(counts))
    assert cli.model.hparams.logit_adjustment == "loss"


def test_soft_prompt_tokens_get_trainable_rows(tiny_bert_dir, tmp_path):
    data = CMIDDataModule(data_dir=str(SHARED_DATA / "cmid"), model_name_or_path=tiny_bert_dir,
                          template="{cls}{p0}{p1}{text_a}{p2}{mask}。{sep}", limit_examples=8, batch_size=8,
                          input_format="prompt", cache_dir=str(tmp_path))
    base = data.tokenizer.convert_tokens_to_ids("[P0]")
    assert data.vocab_size == base + 3
    init_ids = data.tokenizer("问题", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    prompt = PromptTuningModule(tiny_bert_dir, data.num_classes, verbalizer=data.verbalizer, vocab_size=data.vocab_size,
                                soft_prompt_init="问题")
    weight = prompt.mlm.get_input_embeddings().weight
    assert weight.shape[0] == data.vocab_size
    torch.testing.assert_close(weight[base:], weight[init_ids].mean(0).expand(3, -1))
    assert prompt.mlm.get_output_embeddings().weight is weight  # still tied
    cls = ClsTuningModule(tiny_bert_dir, data.num_classes, use_prompt=True, vocab_size=data.vocab_size)
    rows = cls.encoder.get_input_embeddings().weight[base:]
    assert rows.shape[0] == 3 and 0.005 < float(rows.detach().std()) < 0.05  # random, the model's init range 0.02

    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert (batch["input_ids"][:, 1:3] == torch.tensor([base, base + 1])).all()
    for module in (prompt, cls):
        F.cross_entropy(module(batch), batch["labels"]).backward()
        grad = next(p for n, p in module.named_parameters() if "word_embeddings" in n).grad
        assert (grad[base : base + 3].abs().sum(dim=1) > 0).all()
