"""Text corpora for the `language` kind: documents read from this machine, a byte-level BPE trained on
them locally, and the token store, all cached on disk (nothing is downloaded).

    corpus = read_corpus("stdlib")                      # or a folder, or one file
    tokenizer = load_tokenizer(corpus, "bpe", 2048)     # "bytes", "bpe" or a tokenizer.json path
    store = token_store(corpus, tokenizer)              # TokenStore(tokens [n], offsets [doc + 1])

Sources:
  stdlib   the running interpreter's standard library source: every `.py` file under
           `sysconfig.get_paths()["stdlib"]`, except those in folders named test, tests, idle_test,
           site-packages, dist-packages or __pycache__, and files named test_*.py (Python 3.11: 734
           files, 12.1 MB); one document per file
  stdlib+tests  the same with the standard library's tests, 2.6x larger (Python 3.11: 1,790 files,
           31.5 MB): every `.py` file there but those in site-packages, dist-packages or __pycache__
  folder   every .txt, .md, .rst and .py file below it, one document each, and every line of a
           .jsonl file (its `text` field) as one document
  file     one such file: a .jsonl gives a document per line, any other file one document per
           paragraph group (blank-line separated paragraphs joined to at least 2,000 characters),
           so that a single book still splits into documents for validation

Documents are ordered by their path (and line), so a corpus's identity (`Corpus.identity`: its
source, the Python version for the stdlib, the file count, bytes and a SHA-256 of names and
contents) is the same wherever the same text is read. The tokenizer ("bpe": a byte-level BPE of
`vocab_size` tokens trained with HuggingFace `tokenizers`; "bytes": the same with no merges, 256 byte
tokens) always has the token BOS = 0, which starts every document in the store. Both the tokenizer
and the store are cached under `$MI_JAX_CACHE` (default ~/.cache/mi_jax), keyed by the corpus's
content hash and the tokenizer's, and built under a file lock, so runs and sweep processes that
share a corpus build it once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
from filelock import FileLock

from mi_jax import runtime
from mi_jax.config import ConfigError, check
from mi_jax.io import atomic_write

BOS = "<|bos|>"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})
STDLIB_TESTS = frozenset({"test", "tests", "idle_test"})
STDLIB_SOURCES = ("stdlib", "stdlib+tests")
MIN_DOCUMENT_CHARS = 2000  # a single file's paragraphs are joined into documents at least this long
ENCODE_DOCUMENTS = 64  # documents per call to the tokenizer (the progress bar's step)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents (names and texts, in a fixed order) and what identifies them."""

    source: str
    names: tuple[str, ...]
    texts: tuple[str, ...]
    identity: dict

    @property
    def content_hash(self) -> str:
        return self.identity["sha256"]


@dataclasses.dataclass(frozen=True)
class TokenStore:
    """Every document's tokens, BOS first, in one flat array: document i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: np.ndarray  # [n_tokens] uint16, or uint32 for a vocabulary above 65,536
    offsets: np.ndarray  # [n_documents + 1] int64
    path: Path

    @property
    def n_documents(self) -> int:
        return len(self.offsets) - 1

    def documents(self, which) -> np.ndarray:
        """The concatenation of documents `which` (indices, in that order) -> [n] tokens."""
        return np.concatenate([self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in which])


def cache_dir() -> Path:
    return Path(os.environ.get("MI_JAX_CACHE", Path.home() / ".cache" / "mi_jax"))


# ----------------------------------------------------------------------------- documents


def stdlib_files(tests: bool = False) -> tuple[Path, list[Path]]:
    """(the stdlib folder, its documented subset of .py files, sorted); `tests`: with the stdlib's tests."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = NOT_STDLIB if tests else NOT_STDLIB | STDLIB_TESTS
    files = [p for p in root.rglob("*.py")
             if not skip & set(p.relative_to(root).parts[:-1]) and (tests or not p.name.startswith("test_"))]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _jsonl_documents(path: Path, name: str) -> list[tuple[str, str]]:
    out = []
    for i, line in enumerate(_read(path).splitlines()):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{path}, line {i + 1}: not a JSON object with a \"text\" field") from None
        out.append((f"{name}:{i + 1}", str(text)))
    return out


def _paragraph_documents(text: str, name: str) -> list[tuple[str, str]]:
    out, current = [], []
    for paragraph in text.split("\n\n"):
        current.append(paragraph)
        if sum(map(len, current)) >= MIN_DOCUMENT_CHARS:
            out.append("\n\n".join(current))
            current = []
    if current:
        out.append("\n\n".join(current))
    return [(f"{name}#{i}", t) for i, t in enumerate(out)]


def read_corpus(source: str) -> Corpus:
    """The documents of `source` ("stdlib", "stdlib+tests", a folder or a file; see the module doc)."""
    identity: dict = {}
    if source in STDLIB_SOURCES:
        root, files = stdlib_files(tests=source == "stdlib+tests")
        documents = [(p.relative_to(root).as_posix(), _read(p)) for p in files]
        identity["python"] = ".".join(map(str, sys.version_info[:3]))
    else:
        path = Path(source).expanduser()
        check(path.exists(), f"corpus {source}: no such file or folder")
        source = str(path.resolve())
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in (*TEXT_SUFFIXES, ".jsonl")),
                           key=lambda p: p.relative_to(path).as_posix())
            documents = []
            for p in files:
                name = p.relative_to(path).as_posix()
                documents += _jsonl_documents(p, name) if p.suffix == ".jsonl" else [(name, _read(p))]
        elif path.suffix == ".jsonl":
            files, documents = [path], _jsonl_documents(path, path.name)
        else:
            files, documents = [path], _paragraph_documents(_read(path), path.name)
    documents = [(n, t) for n, t in documents if t.strip()]
    check(documents, f"corpus {source} has no text: it needs .txt, .md, .rst, .py or .jsonl files with text in them")
    digest = hashlib.sha256()
    for name, text in documents:
        digest.update(name.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
    identity = {"source": source, **identity, "files": len(files), "documents": len(documents),
                "characters": sum(len(t) for _, t in documents), "sha256": digest.hexdigest()}
    names, texts = zip(*documents)
    return Corpus(source, names, texts, identity)


# ----------------------------------------------------------------------------- tokenizer


def train_bpe(texts, vocab_size: int):
    """A byte-level BPE of `vocab_size` tokens (BOS = 0, then the 256 bytes, then merges) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS], show_progress=not runtime.is_quiet(),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def parse_tokenizer(text: str, where: str):
    """A tokenizer from its JSON (`where` names it in the error), which must have the BOS token."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as e:  # noqa: BLE001 - the library raises a bare Exception for a bad file
        raise ConfigError(f"tokenizer {where} does not parse: {str(e).splitlines()[0]}") from None
    check(tokenizer.token_to_id(BOS) is not None, f"tokenizer {where} has no {BOS} token (the BOS of every document)")
    return tokenizer


def load_tokenizer(corpus: Corpus, spec: str, vocab_size: int):
    """The tokenizer `spec` names: "bpe" (trained on the corpus, `vocab_size` tokens), "bytes" or a path
    to a tokenizer.json; a trained one is cached by (corpus, vocabulary size)."""
    if spec not in ("bpe", "bytes"):
        tokenizer_file_vocab(spec)
        return parse_tokenizer(Path(spec).expanduser().read_text(), spec)
    size = 1 + 256 if spec == "bytes" else vocab_size
    path = cache_dir() / "tokenizers" / f"{corpus.content_hash[:16]}-bpe{size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            atomic_write(path, train_bpe(corpus.texts, size).to_str())
    return parse_tokenizer(path.read_text(), str(path))


@functools.lru_cache(maxsize=16)
def _file_vocab(path: str, mtime: float) -> int:
    return parse_tokenizer(Path(path).read_text(), path).get_vocab_size()


def tokenizer_file_vocab(spec: str) -> int:
    """The vocabulary size of a tokenizer.json (one ConfigError line if it is missing or does not parse)."""
    path = Path(spec).expanduser()
    check(path.is_file(), f"tokenizer file {spec}: no such file")
    return _file_vocab(str(path.resolve()), path.stat().st_mtime)


def tokenizer_hash(tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    check(vocab_size <= 2**31, f"a vocabulary of {vocab_size} tokens is too large for the int32 tokens of a model")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


# ----------------------------------------------------------------------------- token store


def _encode(corpus: Corpus, tokenizer, dtype, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    bos = tokenizer.token_to_id(BOS)
    pieces, lengths = [], []
    bar = tqdm(total=len(corpus.texts), desc="tokenizing", unit="doc", disable=not progress or runtime.is_quiet(),
               leave=False, delay=0.5)
    for start in range(0, len(corpus.texts), ENCODE_DOCUMENTS):
        for encoding in tokenizer.encode_batch(list(corpus.texts[start:start + ENCODE_DOCUMENTS]),
                                               add_special_tokens=False):
            pieces.append(np.asarray([bos, *encoding.ids], dtype))
            lengths.append(len(pieces[-1]))
        bar.update(min(ENCODE_DOCUMENTS, len(corpus.texts) - start))
    bar.close()
    return np.concatenate(pieces), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def token_store(corpus: Corpus, tokenizer, *, progress: bool = True) -> TokenStore:
    """The corpus tokenized (BOS before every document), built once per (corpus, tokenizer) and cached."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    folder = cache_dir() / "stores" / f"{corpus.content_hash[:16]}-{tokenizer_hash(tokenizer)[:16]}"
    meta_path = folder / "meta.json"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not meta_path.exists():  # meta.json is written last: its presence means the arrays are whole
            tokens, offsets = _encode(corpus, tokenizer, dtype, progress)
            for name, array in (("tokens", tokens), ("offsets", offsets)):
                tmp = folder / f"{name}.tmp.npy"
                np.save(tmp, array)
                os.replace(tmp, folder / f"{name}.npy")
            atomic_write(meta_path, json.dumps({"corpus": corpus.identity, "tokenizer": tokenizer_hash(tokenizer),
                                                "n_tokens": int(len(tokens)), "dtype": dtype.name}, indent=1))
    return TokenStore(np.load(folder / "tokens.npy", mmap_mode="r"), np.load(folder / "offsets.npy"), folder)
