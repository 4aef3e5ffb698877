import torch

from llgbm.artifacts.base_model import BaseConfig, build_tiny_model, build_tiny_tokenizer
from llgbm.core.scoring import completion_log_likelihoods, option_scores, task_accuracy
from llgbm.data.tasks import Record, Task


class NextWordModel(torch.nn.Module):
    """Puts all probability on token id (previous id + 1): a successor rule, exactly known."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        logits.scatter_(-1, ((input_ids + 1) % self.vocab).unsqueeze(-1), 0.0)

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_multiple_choice_picks_the_likeliest_option() -> None:
    words = ["a", "b", "c", "d"]
    tokenizer = build_tiny_tokenizer(words)  # ids: <pad> 0, <unk> 1, <eos> 2, a 3, b 4, c 5, d 6
    tokenizer.padding_side = "right"
    model = NextWordModel(len(tokenizer))
    task = Task("successor", ("b", "c", "d"), train=(),
                test=(Record("a", "b"), Record("b", "c"), Record("c", "b"), Record("a b", "c")))
    scores = completion_log_likelihoods(model, tokenizer, [("a", "b"), ("a", "c")])
    assert scores[0] == 0.0 and scores[1] == -1e4
    # Record 3 ("c" -> "b") is wrong under the successor rule; the rest are right.
    assert task_accuracy(model, tokenizer, task) == 0.75


def test_one_token_options_score_as_their_pairwise_log_likelihoods() -> None:
    """The one-forward-per-prompt path equals the (prompt, option) path on a real model with random
    weights, including prompts of different lengths (padding)."""

    words = ["a", "b", "c", "d", "e"]
    tokenizer = build_tiny_tokenizer(words)
    tokenizer.padding_side = "right"
    torch.manual_seed(0)
    model = build_tiny_model(BaseConfig(), len(tokenizer), seed=0).eval()
    prompts = ["a b", "c", "d e a b c", "e"]
    options = ("b", "c", "e")
    pairwise = completion_log_likelihoods(model, tokenizer, [(p, o) for p in prompts for o in options]).view(4, 3)
    fast = option_scores(model, tokenizer, prompts, options)
    assert torch.allclose(fast, pairwise, atol=1e-5)
    assert fast.std() > 0.01  # a random model: the scores differ, so the comparison means something
    # A two-token option takes the pairwise path and sums both tokens' log-probabilities.
    two = option_scores(model, tokenizer, prompts, ("b c", "d"))
    assert torch.allclose(two[:, 0], completion_log_likelihoods(model, tokenizer, [(p, "b c") for p in prompts]))
