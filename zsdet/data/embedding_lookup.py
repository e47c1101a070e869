"""Looking class names up in the rows of an embedding file (the rules are in
:mod:`zsdet.data.embeddings`): the spellings tried, phrase or word-mean vectors, and the streamed
reader of word-vector text files that parses only the tokens a lookup may need."""
import itertools
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["first_index", "read_word_vectors", "wanted_tokens", "select_vectors"]


def first_index(names: Sequence[str], matrix: np.ndarray) -> Dict[str, np.ndarray]:
    """name -> row (the first row of a repeated name)."""
    index: Dict[str, np.ndarray] = {}
    for name, row in zip(names, matrix):
        index.setdefault(name, row)
    return index


def read_word_vectors(path: str, wanted: set) -> Dict[str, np.ndarray]:
    """Stream a word-vector text file; parse and check only the lines of words in ``wanted``."""
    found: Dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
        first = header.split()
        is_header = len(first) == 2 and all(x.isdigit() for x in first)
        if not first or (not is_header and len(first) < 2):
            raise ValueError(f"{path}: not a word-vector text file (first line: {first[:3]})")
        dim = int(first[1]) if is_header else len(first) - 1
        lines = f if is_header else itertools.chain([header], f)
        for lineno, line in enumerate(lines, start=2 if is_header else 1):
            word = line.split(" ", 1)[0]
            if word not in wanted or word in found:
                continue
            fields = line.split()
            if len(fields) - 1 != dim:
                raise ValueError(
                    f"{path}:{lineno}: {word!r} has {len(fields) - 1} values, expected {dim} "
                    f"(from the {'header' if is_header else 'first line'})"
                )
            try:
                found[word] = np.asarray(fields[1:], dtype=np.float64)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: non-numeric value for {word!r} ({e})") from e
    return found


# --------------------------------------------------------------------------------------------
# name matching


def _name_forms(name: str) -> List[str]:
    """Spellings tried for a name, in order: exact, '_'/'-'/' ' joined, then lower-cased."""
    forms = [name, name.replace(" ", "_"), name.replace("_", " "), name.replace(" ", "-")]
    forms += [form.lower() for form in forms]
    return list(dict.fromkeys(forms))


def _words(name: str) -> List[str]:
    return name.replace("_", " ").split()


def wanted_tokens(class_names: Sequence[str]) -> set:
    """Every token a word-vector lookup of ``class_names`` may read (phrases and single words)."""
    wanted = set()
    for name in class_names:
        wanted.update(_name_forms(name))
        for word in _words(name):
            wanted.update(_name_forms(word))
    return wanted


def _lookup(vectors: Mapping[str, np.ndarray], name: str) -> Optional[np.ndarray]:
    return next((vectors[form] for form in _name_forms(name) if form in vectors), None)


def select_vectors(
    vectors: Mapping[str, np.ndarray], class_names: Sequence[str], source: str, word_mean: bool
) -> np.ndarray:
    """Stack the vector of each class (phrase, else the mean of its words if ``word_mean``)."""
    rows, missing = [], []
    for name in class_names:
        vec = _lookup(vectors, name)
        if vec is None and word_mean and len(_words(name)) > 1:
            parts = [_lookup(vectors, word) for word in _words(name)]
            if all(p is not None for p in parts):
                vec = np.mean(parts, axis=0)
        if vec is None:
            missing.append(name)
        else:
            rows.append(vec)
    if missing:
        how = " (nor all of their words)" if word_mean else ""
        raise KeyError(f"{source} has no vector for the class(es) {missing}{how}")
    return np.stack(rows).astype(np.float32)
