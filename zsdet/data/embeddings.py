"""Class embeddings (semantic vectors) read from files, one row per requested class.

:func:`load_class_embeddings` returns a ``(C, a)`` float32 matrix whose row ``i`` is the vector of
``class_names[i]``. File formats (``fmt``; ``"auto"`` decides from the extension and first bytes):

* ``"table"``: a per-class table, UTF-8 text, one line per class, ``name<TAB>f1<TAB>...<TAB>fa``,
  no header (the layout of the shipped ``datasets/coco_zsd/class_embeddings/*.tsv``). Extra rows such as
  ``__background__`` are allowed; a duplicated name is an error. Extension ``.tsv`` or a tab in the
  first line.
* ``"word_vectors"``: word2vec / GloVe / fastText *text* files, ``word f1 ... fa`` separated by
  spaces, optionally headed by a ``"<count> <dim>"`` line. The file is streamed: only the lines of
  words that a class needs are parsed (and checked), so multi-GB files cost one pass and no memory.
  A multi-word class name (``"hot dog"``) takes the vector of the phrase if the file has it as
  ``hot_dog`` or ``hot-dog`` (the phrase-model conventions), else the mean of its words' vectors.
  The concatenation ``hotdog`` is deliberately *not* tried: in web-crawl vocabularies it is
  often an unrelated or noisy token (``sportsball``, ``tennisracket``). The first occurrence of a
  duplicated word wins.
* ``"npy"``: a 2-D ``.npy`` array whose row names come from ``class_list`` (a list, or a text file
  with one name per line) or, by default, from the sidecar ``<stem>.txt`` next to the ``.npy``;
  a name listed twice is an error.
* ``"nus_wide_pickle"``: the official NUS-WIDE GloVe pickle (a list of two float arrays, 1000 tag
  rows and 81 concept rows), read with an unpickler that can only rebuild numpy arrays. Its rows
  have no names: pass ``class_list`` = the 1000 tag names followed by the 81 concept names, or use
  :func:`load_nus_wide_glove` for the official seen (925) / unseen (81) matrix.

Name matching (all formats, :mod:`.embedding_lookup`): the exact name first, then the forms with
spaces replaced by ``_`` or ``-`` (and ``_`` by spaces), then the lower-cased forms. So
``"traffic light"`` finds SUZOD's ``traffic_light``.

Normalisation (``normalize``): ``"l2"`` divides each row by its L2 norm (default); ``"spectral"``
divides the whole matrix by its largest singular value, as SUZOD does with its 81 x 300 fastText
matrix (include ``"__background__"`` in ``class_names`` to reproduce SUZOD's scaling exactly, since
the singular value depends on the rows selected); ``"none"`` keeps the raw values.

Paths may name files shipped with the repository: ``zsdet://coco_zsd/class_embeddings/glove_pl.tsv``
(:mod:`zsdet.data.shipped`). Errors name the file and the offending class / line: missing file
(``FileNotFoundError``), class without a vector (``KeyError``), rows of different lengths, a
dimension other than ``expected_dim``, NaN / inf values or a zero row under ``"l2"``
(``ValueError``).
"""
import collections
import os
import pickle
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.io import write_text
from .embedding_lookup import first_index, read_word_vectors, select_vectors, wanted_tokens
from .shipped import resolve_data_path

FORMATS = ("table", "word_vectors", "npy", "nus_wide_pickle")
NORMALIZATIONS = ("l2", "spectral", "none")

NameList = Union[str, os.PathLike, Sequence[str]]


def load_class_embeddings(
    path: Union[str, os.PathLike],
    class_names: Sequence[str],
    fmt: str = "auto",
    normalize: str = "l2",
    *,
    class_list: Optional[NameList] = None,
    expected_dim: Optional[int] = None,
) -> np.ndarray:
    """Read the vectors of ``class_names`` from ``path``.

    Args:
        path: embedding file (see the module docstring for the formats).
        class_names: C class names; row ``i`` of the result belongs to ``class_names[i]``.
        fmt: ``"auto"`` or one of ``FORMATS``.
        normalize: one of ``NORMALIZATIONS``.
        class_list: names of the file's rows for the formats that store none (``"npy"``,
            ``"nus_wide_pickle"``): a list of names or a text file with one name per line.
        expected_dim: if given, the vector dimension the caller needs (checked).

    Returns:
        (C, a) float32 array.
    """
    path = resolve_data_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class-embedding file {path} does not exist")
    if len(class_names) == 0:
        raise ValueError(f"no class names given to look up in {path}")
    check_unique_names(class_names, f"the classes looked up in {path}")
    if normalize not in NORMALIZATIONS:  # before reading a possibly large file
        raise ValueError(f"unknown normalisation {normalize!r}; use one of {NORMALIZATIONS}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "word_vectors":
        vectors = read_word_vectors(path, wanted_tokens(class_names))
        emb = select_vectors(vectors, class_names, path, word_mean=True)
    elif fmt in FORMATS:
        names, matrix = _read_named_rows(path, fmt, class_list)
        emb = select_vectors(first_index(names, matrix), class_names, path, word_mean=False)
    else:
        raise ValueError(
            f"unknown embedding format {fmt!r} for {path}; use 'auto' or one of {FORMATS}"
        )
    if expected_dim is not None and emb.shape[1] != expected_dim:
        raise ValueError(
            f"{path}: class vectors have dimension {emb.shape[1]}, expected {expected_dim}"
        )
    bad = [name for name, ok in zip(class_names, np.isfinite(emb).all(axis=1)) if not ok]
    if bad:
        raise ValueError(f"{path}: NaN or inf values in the vectors of {bad}")
    return normalize_embeddings(emb, normalize, row_names=class_names, source=path)


def normalize_embeddings(
    emb: np.ndarray,
    mode: str = "l2",
    *,
    row_names: Optional[Sequence[str]] = None,
    source: str = "embeddings",
) -> np.ndarray:
    """Normalise a (C, a) matrix: ``"l2"`` per row, ``"spectral"`` by its largest singular value,
    or ``"none"``. Returns float32; a zero row (``"l2"``) or zero matrix is a ``ValueError``."""
    emb = np.asarray(emb, dtype=np.float64)
    if mode == "none":
        return emb.astype(np.float32)
    if mode == "l2":
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if len(zero):
            names = [row_names[i] for i in zero] if row_names is not None else zero.tolist()
            raise ValueError(f"{source}: zero vectors cannot be L2-normalised: {names}")
        return (emb / norms).astype(np.float32)
    if mode == "spectral":
        scale = np.linalg.norm(emb, ord=2)
        if scale == 0:
            raise ValueError(f"{source}: the embedding matrix is all zeros")
        return (emb / scale).astype(np.float32)
    raise ValueError(f"unknown normalisation {mode!r}; use one of {NORMALIZATIONS}")


def detect_format(path: Union[str, os.PathLike]) -> str:
    """Guess the format of an embedding file from its extension and first bytes."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".bin":
        raise ValueError(
            f"{path}: binary word2vec files are not supported; convert it to the text format "
            "(e.g. gensim's KeyedVectors.save_word2vec_format(..., binary=False))"
        )
    with open(path, "rb") as f:
        head = f.read(4096)
    if ext == ".npy" or head.startswith(b"\x93NUMPY"):
        return "npy"
    if ext in (".pkl", ".pickle") or head[:1] == b"\x80":
        return "nus_wide_pickle"
    if ext == ".tsv" or b"\t" in head.split(b"\n", 1)[0]:
        return "table"
    return "word_vectors"


def read_class_list(path: Union[str, os.PathLike], allow_duplicates: bool = False) -> List[str]:
    """Names from a text file, one per line (whitespace stripped, blank lines skipped); a name
    listed twice is a ``ValueError`` naming the file and the name, unless ``allow_duplicates``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class-list file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not allow_duplicates:
        check_unique_names(names, path)
    return names


def check_unique_names(names: Sequence[str], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and every class name that appears more than once."""
    duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{source}: class names appear more than once: {duplicates}")


def read_embedding_table(path: Union[str, os.PathLike]) -> Tuple[List[str], np.ndarray]:
    """Read a per-class table (``name<TAB>floats``). Returns (names, (n, a) float32 matrix)."""
    path = os.fspath(path)
    names, rows = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue
            if rows and len(fields) - 1 != len(rows[0]):
                raise ValueError(
                    f"{path}:{lineno}: {fields[0]!r} has {len(fields) - 1} values, "
                    f"the first row has {len(rows[0])}"
                )
            names.append(fields[0])
            rows.append(fields[1:])
    if not rows or not rows[0]:
        raise ValueError(f"{path}: no vectors found (expected lines 'name<TAB>f1<TAB>...')")
    check_unique_names(names, path)
    try:
        matrix = np.asarray(rows, dtype=np.float64).astype(np.float32)
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric vector entry ({e})") from e
    return names, matrix


def write_embedding_table(
    path: Union[str, os.PathLike], names: Sequence[str], matrix: np.ndarray
) -> None:
    """Write a per-class table atomically; float32 values are written in their shortest
    exactly-round-tripping form."""
    path = os.fspath(path)
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or len(names) != len(matrix):
        raise ValueError(f"{len(names)} names for a matrix of shape {matrix.shape}")
    # str() of a numpy float32 is its shortest exactly-round-tripping decimal form
    lines = ["\t".join([name, *map(str, row)]) for name, row in zip(names, matrix)]
    write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class NusWideEmbeddings:
    """NUS-WIDE class embeddings in the official order: seen classes first, then unseen.

    Attributes:
        embeddings: (S + U, a) float32; rows ``[:num_seen]`` seen tags, ``[num_seen:]`` concepts.
        num_seen: S (925 for the official file).
        seen_names / unseen_names: class names when the name lists were given, else ``None``.
    """

    embeddings: np.ndarray
    num_seen: int
    seen_names: Optional[List[str]] = None
    unseen_names: Optional[List[str]] = None

    @property
    def seen(self) -> np.ndarray:
        return self.embeddings[: self.num_seen]

    @property
    def unseen(self) -> np.ndarray:
        return self.embeddings[self.num_seen:]


def load_nus_wide_glove(
    path: Union[str, os.PathLike],
    tag_names: Optional[NameList] = None,
    concept_names: Optional[NameList] = None,
    normalize: str = "l2",
) -> NusWideEmbeddings:
    """Build NUS-WIDE's class-embedding matrix from the official GloVe pickle.

    The seen classes are the tags that are not among the concepts, in tag order; the unseen
    classes are the concepts, in concept order (the official recipe). With ``tag_names`` and
    ``concept_names`` (lists, or the distribution's ``TagList1k.txt`` / ``Concepts81.txt``) a tag is
    a concept when its name is; without them, when its vector equals a concept's vector bit for
    bit. On the official file the vector rule finds 75 concepts among the tags, i.e. the official
    925 seen rows (the name lists were not available here, so the two rules were not compared
    row by row).

    Args:
        path: the pickle (``NUS_WIDE_pretrained_w2v_glove-wiki-gigaword-300``).
        tag_names, concept_names: optional row names of the two arrays (give both or neither).
        normalize: one of ``NORMALIZATIONS``, applied to the whole (S + U, a) matrix.
    """
    path = resolve_data_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NUS-WIDE embedding pickle {path} does not exist")
    tags, concepts = _read_nus_wide_arrays(path)
    if (tag_names is None) != (concept_names is None):
        raise ValueError("give both tag_names and concept_names, or neither")
    if tag_names is None:
        is_concept = (tags[:, None, :] == concepts[None, :, :]).all(axis=2).any(axis=1)
        seen_names = unseen_names = None
    else:
        tag_names = _name_list(tag_names, len(tags), f"{path} (tag rows)")
        unseen_names = _name_list(concept_names, len(concepts), f"{path} (concept rows)")
        concepts_set = set(unseen_names)
        is_concept = np.array([name in concepts_set for name in tag_names], dtype=bool)
        seen_names = [name for name, c in zip(tag_names, is_concept) if not c]
    emb = np.concatenate([tags[~is_concept], concepts])
    names = seen_names + unseen_names if seen_names is not None else None
    emb = normalize_embeddings(emb, normalize, row_names=names, source=path)
    return NusWideEmbeddings(emb, int((~is_concept).sum()), seen_names, unseen_names)


# --------------------------------------------------------------------------------------------
# readers


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs to rebuild plain arrays."""

    # numpy's array-reconstruction function, wherever this numpy version keeps it
    _reconstruct = np.empty(0).__reduce__()[0]
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled here"
            ) from None


def _read_nus_wide_arrays(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """The (n_tags, a) and (n_concepts, a) float32 arrays of a NUS-WIDE GloVe pickle."""
    with open(path, "rb") as f:
        try:
            obj = _ArrayOnlyUnpickler(f).load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: {e}") from e
        except Exception as e:  # truncated or not a pickle at all
            raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    ok = (
        isinstance(obj, (list, tuple)) and len(obj) == 2
        and all(isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype.kind == "f" for a in obj)
        and obj[0].shape[1] == obj[1].shape[1]
    )
    if not ok:
        raise ValueError(
            f"{path}: expected a list of two 2-D float arrays of equal width "
            "(tag vectors, concept vectors)"
        )
    return obj[0].astype(np.float32), obj[1].astype(np.float32)


def _read_named_rows(
    path: str, fmt: str, class_list: Optional[NameList]
) -> Tuple[List[str], np.ndarray]:
    """(row names, (n, a) matrix) of a table, .npy or NUS-WIDE pickle file."""
    if fmt == "table":
        return read_embedding_table(path)
    if fmt == "npy":
        matrix = np.load(path, allow_pickle=False)
        if matrix.ndim != 2:
            raise ValueError(
                f"{path}: expected a 2-D (classes, dim) array, got shape {matrix.shape}"
            )
        if class_list is None:
            class_list = os.path.splitext(path)[0] + ".txt"
            if not os.path.isfile(class_list):
                raise FileNotFoundError(
                    f"{path} has no row names: expected the class list {class_list} "
                    "(one name per line) or an explicit class_list argument"
                )
        return _name_list(class_list, len(matrix), path), matrix
    if class_list is None:
        raise ValueError(
            f"{path}: the rows of a NUS-WIDE pickle have no names; pass class_list "
            "(the 1000 tag names then the 81 concept names) or use load_nus_wide_glove()"
        )
    matrix = np.concatenate(_read_nus_wide_arrays(path))
    # the concepts are also among the tags: tags + concepts names 75 classes twice (same vectors)
    return _name_list(class_list, len(matrix), path, allow_duplicates=True), matrix


def _name_list(names: NameList, expected: int, source: str, allow_duplicates: bool = False) -> List[str]:
    """A list of ``expected`` names given as a sequence or a one-name-per-line file; duplicates
    are an error unless ``allow_duplicates``."""
    if isinstance(names, (str, os.PathLike)):
        names = read_class_list(names, allow_duplicates)
    names = list(names)
    if not allow_duplicates:
        check_unique_names(names, f"row names of {source}")
    if len(names) != expected:
        raise ValueError(f"{len(names)} class names given for the {expected} rows of {source}")
    return names
