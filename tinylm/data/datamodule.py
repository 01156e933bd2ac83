"""The ``LightningDataModule`` every tinylm LightningModule shares.

``prepare_data`` trains (or reuses) the tokenizer and packs the corpus once; ``setup`` maps the cache. Or, with
``prepared``, both read a dataset ``tinylm data prepare`` wrote (a local folder or an ``s3://…`` copy, through
litdata): the same token streams, sharded into chunks, so one preparation serves every node.
The training order is a seeded shuffle per epoch; a checkpoint records how far into the epoch training got,
so a resumed run continues with exactly the batches the uninterrupted run would have seen.

The **round plan** is the seam for multiple-round training: ``set_round_plan(ids)`` restricts the next
epochs to the given sample (block) ids, in the given multiplicity; ``None`` means every block.
``TrainingData`` declares what the LightningModules and the round callback read from their DataModule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

from tinylm.artifacts import builtin
from tinylm.artifacts.io import default_cache_dir
from tinylm.data.chunks import TokenChunks
from tinylm.data.corpus import Source, resolve, split_documents
from tinylm.data.packing import PackedBlocks, open_stream, pack
from tinylm.data.prepared import PreparedData, open_prepared
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


@runtime_checkable
class TrainingData(Protocol):
    """What ``LanguageModel`` (and its subclasses) and ``MultiRoundTraining`` read from ``trainer.datamodule``.

    ``TextDataModule`` is the implementation; a DataModule with these members can stand in for it.
    """

    tokenizer: Tokenizer | None  # the model's vocabulary and the bytes per token of val/bpb
    sources_spec: list[str]  # provenance of the written model dir
    seq_len: int  # tokens per block
    batch_size: int  # blocks per micro-batch per device
    cache_folder: Path | None  # the packed cache or prepared dataset (provenance)
    train_stream: np.ndarray | TokenChunks  # the training tokens (round scoring), opened in ``setup``

    @property
    def meta(self) -> dict[str, Any]: ...  # the packed cache's or prepared dataset's description (provenance)

    @property
    def num_train_blocks(self) -> int: ...  # training blocks of seq_len (+1 shared) tokens

    def set_round_plan(self, ids: np.ndarray | list[int] | None) -> None: ...  # train the next epochs on these ids


class TextDataModule(L.LightningDataModule):
    """Packed next-token blocks from text sources.

    Args:
        sources: text sources (see ``tinylm.data.corpus``): ``builtin``, local files, ``hf:<name>``.
        tokenizer: a SentencePiece ``.model`` or a model dir; ``None`` trains a BPE tokenizer of
            ``vocab_size`` pieces on the training documents (cached).
        vocab_size: size of the tokenizer trained when ``tokenizer`` is None.
        seq_len: tokens per block (the model sees ``seq_len`` inputs and as many shifted targets).
        batch_size: blocks per micro-batch per device.
        val_every: every ``val_every``-th document of each source is held out for validation.
        text_field: the text column of jsonl/parquet sources.
        cache_dir: where tokenizers and packed streams are cached (default ``$TINYLM_CACHE`` or
            ``~/.cache/tinylm``).
        seed: shuffling seed.
        num_workers: DataLoader workers.
        prepared: a dataset written by ``tinylm data prepare`` — a local folder or a URI litdata reads
            (``s3://bucket/dir``) — used instead of ``sources``; it brings its tokenizer and ``val_every``.
    """

    def __init__(
        self,
        sources: list[str] | str = "builtin",
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        seq_len: int = 256,
        batch_size: int = 8,
        val_every: int = 50,
        text_field: str = "text",
        cache_dir: str | None = None,
        seed: int = 1234,
        num_workers: int = 0,
        prepared: str | None = None,
    ) -> None:
        super().__init__()
        self.sources_spec = [sources] if isinstance(sources, str) else list(sources)
        if not self.sources_spec:
            raise TinyLMError("data.sources is empty; give at least one source (e.g. builtin)")
        if seq_len < 1 or batch_size < 1:
            raise TinyLMError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be positive")
        if val_every < 2:
            raise TinyLMError(f"val_every={val_every} must be at least 2 (1 would hold out every document)")
        self.tokenizer_path, self.vocab_size = tokenizer, vocab_size
        self.seq_len, self.batch_size, self.val_every = seq_len, batch_size, val_every
        self.text_field, self.seed, self.num_workers = text_field, seed, num_workers
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.prepared, self.prepared_data = prepared, None
        self._meta: dict[str, Any] | None = None
        self.round_plan: np.ndarray | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)
        self.tokenizer: Tokenizer | None = None
        self.cache_folder: Path | None = None

    # ---- one-time work: tokenizer and packed cache -----------------------------------------------------
    def _sources(self) -> list[Source]:
        return [s for spec in self.sources_spec for s in resolve(spec, self.text_field)]

    def prepared_dataset(self) -> PreparedData:
        """The prepared dataset (opened once); a given ``tokenizer`` must be the one it was made with."""
        if self.prepared_data is None:
            data = open_prepared(self.prepared, self.cache_dir)
            if self.tokenizer_path is not None and \
                    load_tokenizer(builtin.resolve(self.tokenizer_path)).sha256 != data.tokenizer.sha256:
                raise TinyLMError(f"data.tokenizer {self.tokenizer_path} is not the tokenizer {self.prepared} was "
                                  "prepared with; leave data.tokenizer unset (the dataset brings its own)")
            self.prepared_data = data
        return self.prepared_data

    def resolve_tokenizer(self) -> Tokenizer:
        """The given tokenizer, or one trained on the training documents and cached by their fingerprint."""
        if self.prepared is not None:
            return self.prepared_dataset().tokenizer
        if self.tokenizer_path is not None:
            return load_tokenizer(builtin.resolve(self.tokenizer_path))
        sources = self._sources()
        key = hashlib.sha256(json.dumps([[s.fingerprint for s in sources], self.vocab_size, self.val_every,
                                         "bpe-v1"]).encode()).hexdigest()[:20]
        path = self.cache_dir / "tokenizers" / f"{key}.model"
        if path.is_file():
            return load_tokenizer(path)
        train_docs, _ = split_documents(sources, self.val_every)
        return train_tokenizer(train_docs, path, vocab_size=self.vocab_size)

    def prepare_data(self) -> None:
        tokenizer = self.resolve_tokenizer()
        if self.prepared is None:
            self.cache_folder = pack(self._sources(), tokenizer, self.cache_dir / "packed", self.val_every)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        self.tokenizer = self.resolve_tokenizer()
        if self.prepared is not None:
            data = self.prepared_dataset()
            self.cache_folder, self._meta = data.folder, data.manifest
            self.sources_spec, self.val_every = data.manifest["sources"], data.manifest["val_every"]
            self.train_stream, self.val_stream = data.streams["train"], data.streams["val"]
        else:
            self.cache_folder = pack(self._sources(), self.tokenizer, self.cache_dir / "packed", self.val_every)
            self.train_stream = open_stream(self.cache_folder, "train")
            self.val_stream = open_stream(self.cache_folder, "val")
        for split, stream in (("training", self.train_stream), ("validation", self.val_stream)):
            if len(stream) <= self.seq_len:
                raise TinyLMError(
                    f"seq_len={self.seq_len} is larger than the {split} corpus ({len(stream)} tokens); "
                    "use a smaller seq_len or more text"
                )

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:  # after prepare_data alone
            self._meta = json.loads((self.cache_folder / "meta.json").read_text())
        return self._meta

    @property
    def num_train_blocks(self) -> int:
        return (len(self.train_stream) - 1) // self.seq_len

    def train_blocks(self, ids: np.ndarray | None = None) -> PackedBlocks:
        """All training blocks (or the given ids) in id order — what a scoring pass iterates over."""
        return PackedBlocks(self.train_stream, self.seq_len, ids)

    # ---- the round plan seam ---------------------------------------------------------------------------
    def set_round_plan(self, ids: np.ndarray | list[int] | None) -> None:
        """Train the following epochs on these sample ids (duplicates allowed); None restores all blocks."""
        self.round_plan = None if ids is None else np.asarray(ids, dtype=np.int64)

    # ---- loaders ---------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = self.train_blocks(self.round_plan)
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        # Keep the resume point until training has moved past its epoch: Lightning may build a loader before
        # it restores the loops (to count steps for the LR schedule), and again when reloading every epoch.
        if self._resume is not None and epoch > self._resume[0]:
            self._resume = None
        skip_epoch, skip_batches = self._resume or (-1, 0)
        sampler = ResumableSampler(
            dataset,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            seed=self.seed,
            skip_epoch=skip_epoch,
            skip=skip_batches * self.batch_size,
        )
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        dataset = PackedBlocks(self.val_stream, self.seq_len)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    test_dataloader = val_dataloader

    # ---- checkpointed state: the round plan and the position inside the epoch --------------------------
    def settings(self) -> dict[str, Any]:
        """What decides the samples and their order: a resume must keep them to continue the same run."""
        return {"sources": self.sources_spec, "tokenizer": self.tokenizer.sha256 if self.tokenizer else None,
                "seq_len": self.seq_len, "batch_size": self.batch_size, "val_every": self.val_every,
                "text_field": self.text_field, "seed": self.seed,
                "prepared": self.prepared_data.manifest["id"] if self.prepared_data else None}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"round_plan": None if self.round_plan is None else self.round_plan.tolist(),
                                 "settings": self.settings()}
        if self.trainer is not None:
            loop = self.trainer.fit_loop.epoch_loop
            # saved from on_train_batch_end: the batch that just ran counts as processed, not yet completed
            state["epoch"] = self.trainer.current_epoch
            state["batches_done"] = loop.batch_progress.current.processed
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        current = self.settings()
        for name, saved in state.get("settings", {}).items():
            if saved != current[name] and not (name == "tokenizer" and current[name] is None):
                shown = "a different tokenizer" if name == "tokenizer" else f"data.{name}={current[name]}"
                raise TinyLMError(f"the checkpoint was trained with data.{name}={saved}, this run asks for {shown}; "
                                  "resume with the checkpoint's data settings, or start a new run without "
                                  "--ckpt_path")
        self.set_round_plan(state.get("round_plan"))
        if "epoch" in state:
            self._resume = (state["epoch"], state["batches_done"])


class ResumableSampler(DistributedSampler):
    """A seeded per-epoch shuffle (sharded over ranks) that can start part-way into one epoch.

    Its length stays the full epoch's so Lightning's batch counters line up after a resume.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, skip_epoch: int = -1, skip: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip_epoch, self.skip = skip_epoch, skip

    def __iter__(self):
        order = list(super().__iter__())
        return iter(order[self.skip :] if self.epoch == self.skip_epoch else order)

