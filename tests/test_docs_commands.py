"""Every command in README.md and docs/*.md runs as written, and every link between the pages resolves.

Without running any job, each shell command of a ```bash block is checked:

* repository files it names exist (scripts, configs, shipped data under ``datasets/``, ``zsdet://``
  paths); globbed inputs, ``$VARIABLES`` without a value, and outputs (``--output``, ``--output-dir``,
  ``--dir``, ``OUTPUT_DIR``, anything under ``output/``) are left out;
* ``python X.py ...``: every ``--flag`` appears in ``python X.py --help``, the arguments parse with
  the script's own parser, ``--config-file`` loads with :func:`zsdet.config.get_zsdet_cfg`, and the
  ``KEY VALUE`` overrides after the arguments name real config keys and merge into that config.

Shell syntax understood: line continuations (``\\``), ``#`` comments, ``;`` / ``&&`` / ``|``,
``VAR=value`` lines and env-var prefixes, ``for VAR in ...; do ...; done`` (the body is checked once
per value). The scripts' parsers are captured in one worker process (this file run as a script), so
torch and detectron2 are imported once; the parsers only parse, no tool runs.
"""
import argparse
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FLAGS = {"--output", "--output-dir", "--dir"}  # their values are written, not read
OUTPUT_KEYS = {"OUTPUT_DIR"}
NOT_REPO_DIRS = {"output", "build", "dist"}
SEPARATORS = {";", "&&", "||", "|", "&"}
GLOB_CHARS = set("*?[")
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def doc_files() -> List[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))


# ----------------------------------------------------------------------------------------------
# Shell commands out of markdown
# ----------------------------------------------------------------------------------------------

@dataclass
class Command:
    where: str  # "README.md:123"
    argv: List[str]
    env: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def bash_blocks(text: str):
    """(first line number, block text) of each ```bash block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh", "```shell"):
            start, body = i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            yield start, "\n".join(body)
        i += 1


def _logical_lines(block: str, first_line: int):
    """Lines with their ``\\`` continuations joined, each with the number of its first line."""
    current, start = [], None
    for n, line in enumerate(block.split("\n"), first_line):
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            current.append(line.rstrip()[:-1])
            continue
        current.append(line)
        yield start, " ".join(current)
        current, start = [], None
    if current:
        yield start, " ".join(current)


def _tokens(line: str) -> List[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _expand(token: str, variables: Dict[str, str]) -> str:
    def value(m):
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token)


def _segments(tokens: List[str]):
    segment = []
    for t in tokens:
        if t in SEPARATORS:
            if segment:
                yield segment
            segment = []
        else:
            segment.append(t)
    if segment:
        yield segment


def extract_commands(text: str, name: str) -> List[Command]:
    """The simple commands of every ```bash block of ``text``, variables expanded."""
    commands: List[Command] = []
    for first_line, block in bash_blocks(text):
        variables: Dict[str, str] = {}
        loop = None  # (variable, values, body segments) while inside for ... done
        for line_no, line in _logical_lines(block, first_line):
            for seg in _segments(_tokens(line)):
                where = f"{name}:{line_no}"
                if seg[0] == "for":
                    if loop is not None or len(seg) < 3 or seg[2] != "in":
                        raise ValueError(f"{where}: unsupported for loop {seg}")
                    values = [v for v in seg[3:] if v != "do"]
                    loop = (seg[1], values, [])
                    continue
                if seg[0] == "done":
                    if loop is None:
                        raise ValueError(f"{where}: 'done' without 'for'")
                    var, values, body = loop
                    for v in values:
                        for body_where, body_seg in body:
                            commands += _simple(body_where, body_seg, {**variables, var: v}, variables)
                    loop = None
                    seg = seg[1:]
                    if not seg:
                        continue
                if seg[0] == "do":
                    seg = seg[1:]
                    if not seg:
                        continue
                if loop is not None:
                    loop[2].append((where, seg))
                else:
                    commands += _simple(where, seg, variables, variables)
        if loop is not None:
            raise ValueError(f"{name}: for loop without 'done'")
    return commands


def _simple(where: str, seg: List[str], variables: Dict[str, str], persistent: Dict[str, str]):
    """One simple command: leading NAME=value words are env prefixes (or, alone, assignments)."""
    seg = [_expand(t, variables) for t in seg]
    if seg[0] == "export":
        seg = seg[1:]
    env = {}
    while seg and re.match(r"^[A-Za-z_]\w*=", seg[0]):
        k, v = seg.pop(0).split("=", 1)
        env[k] = v
    if not seg:  # a plain assignment: later commands of the block see it
        persistent.update(env)
        return []
    return [Command(where, seg, env)]


# ----------------------------------------------------------------------------------------------
# Checks that need no Python of the project
# ----------------------------------------------------------------------------------------------

def _repo_dirs() -> set:
    return {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
            and p.name not in NOT_REPO_DIRS and not p.name.endswith(".egg-info")}


def _is_python(argv0: str) -> bool:
    return argv0 in ("python", "python3") or argv0.endswith("/python") or argv0.endswith("/python3")


def check_paths(cmd: Command, repo_dirs: set) -> List[str]:
    """Repository paths named by the command exist (inputs only: outputs and globs are left out)."""
    errors = []
    argv = cmd.argv
    if argv[0] in ("source", ".") and argv[1:2] and argv[1].startswith(".venv/"):
        return []  # the environment dev/env.sh creates
    skip_next = False
    for i, token in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        flag, _, inline = token.partition("=")
        if flag in OUTPUT_FLAGS or token in OUTPUT_KEYS:
            skip_next = not inline
            continue
        if token.startswith("zsdet://"):
            path = "datasets/" + token[len("zsdet://"):]
        else:
            path = token
        if "$" in path or GLOB_CHARS & set(path) or path.startswith("-"):
            continue
        top = path.split("/", 1)[0]
        if "/" in path and top in repo_dirs and not (REPO / path).exists():
            errors.append(f"{cmd}: no file {path} in the repository")
    # the program itself: a script run by python / bash, or a repository executable
    prog = None
    if (_is_python(argv[0]) and len(argv) > 1 and argv[1] != "-m") or argv[0] in ("bash", "sh", "source", "."):
        prog = argv[1] if len(argv) > 1 else None
    elif "/" in argv[0] and not argv[0].startswith((".venv/", "/")):
        prog = argv[0]
    if prog is not None and not (REPO / prog).is_file():
        msg = f"{cmd}: no file {prog} in the repository"
        if msg not in errors:
            errors.append(msg)
    return errors


def python_script_commands(commands: List[Command]) -> List[Command]:
    return [c for c in commands if _is_python(c.argv[0]) and len(c.argv) > 1 and c.argv[1] != "-m"
            and c.argv[1].endswith(".py") and (REPO / c.argv[1]).is_file()]


def run_worker(commands: List[Command]) -> Dict[str, List[str]]:
    """Check the python commands in one worker process; {str(command): [errors]}."""
    payload = [{"key": str(c), "script": c.argv[1], "args": c.argv[2:]} for c in commands]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker"], input=json.dumps(payload),
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().split("\n")[-1])


# ----------------------------------------------------------------------------------------------
# The worker: captures each script's parser, parses the documented arguments, checks config keys
# ----------------------------------------------------------------------------------------------

class _ParserCaptured(BaseException):  # BaseException: passes through the scripts' `except Exception`
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def _capture_parser(script: str) -> argparse.ArgumentParser:
    """Run ``script`` as __main__ until it parses its arguments; return that parser (nothing runs)."""
    original = argparse.ArgumentParser.parse_known_args  # parse_args calls it too

    def capture(self, *args, **kwargs):
        raise _ParserCaptured(self)

    argparse.ArgumentParser.parse_known_args = capture
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script]
    sys.path.insert(0, str((REPO / script).parent))
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except _ParserCaptured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path
    raise RuntimeError(f"{script} finished without parsing arguments")


def _parse(parser: argparse.ArgumentParser, args: List[str]):
    """parse_args, returning (namespace, None) or (None, argparse's error message)."""
    def fail(message):
        raise ValueError(message)
    saved = parser.error
    parser.error = fail
    try:
        return parser.parse_args(args), None
    except ValueError as e:
        return None, str(e)
    except SystemExit:
        return None, "the parser exited (--help or a bad value)"
    finally:
        parser.error = saved


def _has_key(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_python_command(item, parsers, helps) -> List[str]:
    from zsdet.config import get_zsdet_cfg

    script, args = item["script"], item["args"]
    if script not in parsers:
        try:
            parsers[script] = _capture_parser(script)
            helps[script] = parsers[script].format_help()
        except BaseException as e:  # noqa: B902 - any failure of the script is a finding
            parsers[script] = None
            helps[script] = f"{type(e).__name__}: {e}"
    parser = parsers[script]
    if parser is None:
        return [f"python {script} --help failed: {helps[script]}"]
    errors = []
    ns, message = _parse(parser, args)
    opts = list(getattr(ns, "opts", None) or []) if ns is not None else []
    if opts and opts[0] == "--":
        opts = opts[1:]
    flag_tokens = args[: len(args) - len(opts)] if ns is not None else args
    for token in flag_tokens:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and not re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", helps[script]):
            errors.append(f"flag {flag} is not in `python {script} --help`")
    if message is not None:
        errors.append(f"`python {script}` rejects the arguments: {message}")
        return errors
    config_file = getattr(ns, "config_file", "") or ""
    cfg = None
    if config_file and not config_file.startswith("output/"):
        if not (REPO / config_file).is_file():
            errors.append(f"no config file {config_file}")
        else:
            try:
                cfg = get_zsdet_cfg(str(REPO / config_file))
            except Exception as e:  # noqa: BLE001
                errors.append(f"config {config_file} does not load: {type(e).__name__}: {e}")
    if cfg is None:
        cfg = get_zsdet_cfg()
    if opts:
        if len(opts) % 2:
            errors.append(f"config overrides are not KEY VALUE pairs: {opts}")
        keys = opts[0::2]
        bad = [k for k in keys if not CONFIG_KEY.match(k) or not _has_key(cfg, k)]
        for k in bad:
            errors.append(f"{k} is not a config key (zsdet.config.get_zsdet_cfg)")
        if not bad and len(opts) % 2 == 0:
            try:
                cfg.merge_from_list(opts)
            except Exception as e:  # noqa: BLE001
                errors.append(f"config overrides {opts} do not merge: {type(e).__name__}: {e}")
    return errors


def worker() -> None:
    import logging

    import zsdet  # noqa: F401  (as the scripts do, before detectron2)

    logging.disable(logging.CRITICAL)
    items = json.load(sys.stdin)
    parsers, helps, out = {}, {}, {}
    stdout = sys.stdout
    sys.stdout = sys.stderr  # scripts' import-time chatter must not reach the JSON line
    try:
        for item in items:
            out[item["key"]] = _check_python_command(item, parsers, helps)
    finally:
        sys.stdout = stdout
    print(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# Links between the pages
# ----------------------------------------------------------------------------------------------

def github_anchors(text: str) -> set:
    """Anchors GitHub gives the headings of a markdown file (outside code blocks)."""
    anchors, seen, fence = set(), {}, False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # link text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def check_links(path: Path) -> List[str]:
    text = path.read_text()
    text_no_code = re.sub(r"```.*?```", "", text, flags=re.S)
    errors = []
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text_no_code)
    targets += re.findall(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", text_no_code)  # HTML
    for target in targets:
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        rel = path.relative_to(REPO)
        if not dest.exists():
            errors.append(f"{rel}: link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in github_anchors(dest.read_text()):
            errors.append(f"{rel}: no heading for anchor #{anchor} in {dest.relative_to(REPO)}")
    return errors


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

BOGUS_DOC = """
```bash
python tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml --no-such-flag
python tools/train_net.py --config-file configs/shapes/no_such_config.yaml
python tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml --eval-only \\
    MODEL.WEIGHTS output/x.pth MODEL.NO_SUCH_KEY 1   # a comment
for s in evaluate nonsense; do
  OMP_NUM_THREADS=1 python tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml --stages $s
done
bash dev/no_such_script.sh && python tools/demo.py --config-file CFG --input "img/*.png" --output out
python tools/evaluate_zsd.py gt.json res.json --split zsdet://coco_zsd/no_such_split.tsv
```
"""


@pytest.fixture(scope="module")
def checked():
    """{doc name: [errors]} for the real pages and for BOGUS_DOC, from one worker run."""
    docs = {str(p.relative_to(REPO)): extract_commands(p.read_text(), str(p.relative_to(REPO)))
            for p in doc_files()}
    docs["BOGUS_DOC"] = extract_commands(BOGUS_DOC, "BOGUS_DOC")
    repo_dirs = _repo_dirs()
    every = [c for cmds in docs.values() for c in cmds]
    results = run_worker(python_script_commands(every))
    out = {}
    for name, cmds in docs.items():
        out[name] = {str(c): check_paths(c, repo_dirs) + [f"{c}: {e}" for e in results.get(str(c), [])]
                     for c in cmds}
    return out


def test_extract_commands_shell_syntax():
    cmds = extract_commands(BOGUS_DOC, "B")
    argvs = [c.argv for c in cmds]
    assert argvs[2][-4:] == ["MODEL.WEIGHTS", "output/x.pth", "MODEL.NO_SUCH_KEY", "1"]  # \ joined, # dropped
    assert [a[-1] for a in argvs[3:5]] == ["evaluate", "nonsense"]  # for loop, once per value
    assert cmds[3].env == {"OMP_NUM_THREADS": "1"} and argvs[3][0] == "python"  # env prefix
    assert argvs[5] == ["bash", "dev/no_such_script.sh"] and argvs[6][:2] == ["python", "tools/demo.py"]  # &&
    assert argvs[6][5] == "img/*.png"  # quotes removed
    assert extract_commands('```bash\nX="a b"\necho "$X" ${X}\n```', "v")[0].argv == ["echo", "a b", "a b"]


def test_checker_reports_broken_commands(checked):
    """The checker can fail: every line of BOGUS_DOC is reported for what is wrong with it."""
    by_command = checked["BOGUS_DOC"]
    text = "\n".join(e for errors in by_command.values() for e in errors)
    assert "flag --no-such-flag is not in `python tools/train_net.py --help`" in text
    assert "no file configs/shapes/no_such_config.yaml" in text
    assert "MODEL.NO_SUCH_KEY is not a config key" in text
    assert "--stages nonsense" in text and "unknown stages" in text
    assert "--stages evaluate" not in text
    assert "no file dev/no_such_script.sh" in text
    assert "no config file CFG" in text
    assert "no file datasets/coco_zsd/no_such_split.tsv" in text
    assert "no file img" not in text and "no file out" not in text  # globs and outputs are not inputs
    clean = [c for c, errors in by_command.items() if not errors]
    assert len(by_command) == 8 and len(clean) == 1 and clean[0].endswith("--stages evaluate"), text


@pytest.mark.parametrize("doc", [str(p.relative_to(REPO)) for p in doc_files()])
def test_doc_commands_run_as_written(checked, doc):
    errors = [e for errs in checked[doc].values() for e in errs]
    assert not errors, "\n".join(errors)


def test_readme_and_docs_have_commands(checked):
    assert len(checked["README.md"]) >= 5


@pytest.mark.parametrize("doc", [str(p.relative_to(REPO)) for p in doc_files()])
def test_doc_links_resolve(doc):
    errors = check_links(REPO / doc)
    assert not errors, "\n".join(errors)


def prose_path_errors(path: Path, repo_dirs: set) -> List[str]:
    """Repository paths in `inline code` of the prose exist (placeholders and globs left out)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    errors = []
    for span in re.findall(r"`([^`\s]+)`", text):
        p = "datasets/" + span[len("zsdet://"):] if span.startswith("zsdet://") else span
        if "/" not in p or p.split("/", 1)[0] not in repo_dirs or set(p) & (GLOB_CHARS | set("<>{}$")):
            continue
        if not (REPO / p).exists():
            errors.append(f"{path.relative_to(REPO)}: `{span}` names no file of the repository")
    return errors


@pytest.mark.parametrize("doc", [str(p.relative_to(REPO)) for p in doc_files()
                                 if p.name != "zsd_protocol.md"])  # its paths are SUZOD's repository's
def test_doc_prose_paths_exist(doc):
    errors = prose_path_errors(REPO / doc, _repo_dirs())
    assert not errors, "\n".join(errors)


def test_github_anchors():
    text = "# A title\n## Ranking (`benchmarks/zsd_methods.py`)\n```\n# not a heading\n```\n## A title\n"
    assert github_anchors(text) == {"a-title", "ranking-benchmarkszsd_methodspy", "a-title-1"}


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker()
