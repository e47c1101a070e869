"""Reading json files given by users, with errors that name the file."""
import json
from typing import Any


def read_json(path: str, what: str) -> Any:
    """Parsed json of ``path``.

    Raises:
        FileNotFoundError / ValueError naming ``what`` (e.g. ``"class-split"``) and ``path`` when the
        file is missing or not valid json (truncated, wrong encoding, a syntax error).
    """
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} file {path} is not valid JSON ({e})") from None
