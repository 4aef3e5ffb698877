import torch

from llgbm.evaluate import completion_log_likelihoods, task_accuracy
from llgbm.models import build_tiny_tokenizer
from llgbm.tasks import Record, Task


class NextWordModel(torch.nn.Module):
    """Puts all probability on the token `successor[previous token]`: a successor rule, exactly known."""

    def __init__(self, vocab: int, successor: dict[int, int]):
        super().__init__()
        self.vocab = vocab
        self.successor = torch.arange(vocab)
        for token, following in successor.items():
            self.successor[token] = following
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        logits.scatter_(-1, self.successor[input_ids].unsqueeze(-1), 0.0)

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_multiple_choice_picks_the_likeliest_option() -> None:
    words = ["a", "b", "c", "d"]
    tokenizer = build_tiny_tokenizer(words)
    tokenizer.padding_side = "right"
    # Each word is one token, bare ("a") or after a space (" b"); the next word after either form of w.
    token = {text: ids[0] for text in (*words, *(" " + w for w in words))
             for ids in [tokenizer(text, add_special_tokens=False)["input_ids"]] if len(ids) == 1}
    assert len(token) == 2 * len(words)
    model = NextWordModel(len(tokenizer), {token[form + w]: token[" " + n]
                                           for w, n in zip(words, words[1:]) for form in ("", " ")})
    task = Task("successor", ("b", "c", "d"), train=(),
                test=(Record("a", "b"), Record("b", "c"), Record("c", "b"), Record("a b", "c")))
    scores = completion_log_likelihoods(model, tokenizer, [("a", "b"), ("a", "c")])
    assert scores[0] == 0.0 and scores[1] == -1e4
    # Record 3 ("c" -> "b") is wrong under the successor rule; the rest are right.
    assert task_accuracy(model, tokenizer, task) == 0.75
