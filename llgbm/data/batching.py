"""Token-level views of task records, shared by teacher training and accuracy scoring."""
from __future__ import annotations

import hashlib

import torch
from transformers import PreTrainedTokenizerBase

from llgbm.core.scoring import completion_batch
from llgbm.data.tasks import Record


def record_batch(tokenizer: PreTrainedTokenizerBase, records: list[Record]) -> dict[str, torch.Tensor]:
    return completion_batch(tokenizer, [(r.prompt, r.response) for r in records])


class GeneratorDataset:
    """Training items for the generator: each pairs one teacher checkpoint (its weight tokens, scales and
    cached delta) with a batch of N prompts of its task, redrawn at every draw (as DnD does)."""

    def __init__(self, tokens: torch.Tensor, scales: torch.Tensor, deltas: torch.Tensor, prompt_rows: list[torch.Tensor],
                 embeddings: torch.Tensor, prompts_per_sample: int, names: list[str],
                 extras: dict[str, torch.Tensor] | None = None, records: dict[str, torch.Tensor] | None = None,
                 record_rows: list[torch.Tensor] | None = None, records_per_item: int = 0):
        self.tokens, self.scales, self.deltas = tokens, scales, deltas
        # Further per-checkpoint tensors drawn with each item (the KL reference's targets and prompts).
        self.extras = extras or {}
        self.prompt_rows = prompt_rows  # per checkpoint: rows of `embeddings` of its task's train prompts
        self.embeddings = embeddings
        self.prompts_per_sample = prompts_per_sample
        self.names = names  # "task/step" per checkpoint
        # The task loss's records: token batches (input_ids, attention_mask, labels; (R, L)) of the training
        # tasks' own training records, and per checkpoint the rows of its task's.
        self.records = records or {}
        self.record_rows = record_rows or []
        self.records_per_item = records_per_item  # drawn afresh for each item that gets the task loss
        short = [n for n, rows in zip(names, prompt_rows) if len(rows) < prompts_per_sample]
        if short:
            raise ValueError(f"checkpoints {short[:3]} have fewer train prompts than generator.prompts_per_sample")

    def fingerprint(self) -> str:
        """A hash of every target and condition tensor."""
        digest = hashlib.sha256()
        for tensor in (self.tokens, self.scales, self.deltas, self.embeddings, *self.prompt_rows,
                       *(self.extras[k] for k in sorted(self.extras)), *(self.records[k] for k in sorted(self.records)),
                       *self.record_rows):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def draw(self, batch_size: int, generator: torch.Generator, records_for: int = 0,
             records_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`batch_size` items drawn with replacement, each with a fresh batch of its task's prompts; with
        records, the first `records_for` items also get `records_per_item` of their task's training records
        (`draw_records`, from `records_generator`)."""
        index = torch.randint(0, len(self), (batch_size,), generator=generator)
        condition = torch.stack([
            self.embeddings[self.prompt_rows[i][torch.randperm(len(self.prompt_rows[i]), generator=generator)[: self.prompts_per_sample]]]
            for i in index.tolist()
        ])
        batch = {"index": index, "condition": condition, "tokens": self.tokens[index], "scales": self.scales[index],
                 "delta": self.deltas[index], **{k: v[index] for k, v in self.extras.items()}}
        if self.records and records_for:
            if records_generator is None:
                raise ValueError("GeneratorDataset.draw: records need their own random stream")
            batch.update(self.draw_records(index[:records_for], self.records_per_item, records_generator))
        return batch

    def draw_records(self, index: torch.Tensor, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """For each drawn checkpoint, `count` of its task's training records, without replacement, from
        their own random stream (so the task loss leaves the rest of the data stream as it is):
        input_ids, attention_mask and labels, each (len(index), count, L)."""
        chosen = torch.stack([self.record_rows[i][torch.randperm(len(self.record_rows[i]), generator=generator)[:count]]
                              for i in index.tolist()])
        return {f"records_{k}": v[chosen] for k, v in self.records.items()}
