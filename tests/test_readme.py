"""The README is executable: every ```bash line and ```python block in it runs here, in README order, or is
marked as not run where a reader can see why.

Marks (README.md):
- a block whose first line is `# not run: <reason>` is skipped whole;
- a bash line whose trailing comment starts with `# not run: <reason>` is skipped alone.

The slow test runs everything else in ONE scratch folder, as a reader on a fresh clone would after
`source .venv/bin/activate`: a copy of the repository's tracked files, `.venv` a symlink to this venv, its
bin first on PATH, and no MLFLOW_*, RUNNER_*, OPTUNA_* variables inherited. The only changes to what the
README says are these, appended to runner commands (`python -m runner ...`, also through `make run`):

    TEST_OVERRIDES = epochs=1 data.train_stride=16 trainer.verbose=false
    + hydra.sweeper.n_trials=2 on a line that uses an Optuna preset (sweep=optuna...)

and `make <target>` runs as `make -o .venv/.installed <target>`, so make never re-creates the venv (a
re-install from the scratch copy would point this venv's editable install at it; checked before and after).
Servers (`mlflow ui|server|models serve`, `make ui|server`) start in the background on the port their line
gives, are waited for (/health or /ping) and stay up for the later blocks; all are stopped at the end.
`export`/`source` lines change the environment of every later line and block, as in a reader's shell.

The fast tests only read the README: every block is marked or runnable, every `python -m runner` line
composes (Hydra's compose API) and validates as the runner would, and every `runner-registry` or
`runner.forecast.evaluate` subcommand and flag exists. So a renamed key, option, command or flag fails a test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.servers import ServerDidNotStart, ServerProcess

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV = Path(sys.executable).parents[1]

TEST_OVERRIDES = ["epochs=1", "data.train_stride=16", "trainer.verbose=false"]
# The runner's own commands, whose console must hold no warning or deprecation text from a library.
OURS = re.compile(r"^\s*(make run\b|python -m runner(\.evaluate|\.registry(_cli)?)?\b|runner-registry\b)")
# Library noise: Python's `XxxWarning:` lines, logging's `WARNING`, deprecations. The runner's own
# lowercase `warning:` lines (reproduce: "the git commit differs") say something and stay.
NOISE = re.compile(r"\b\w*Warning\b|\bWARNING\b|[Dd]eprecat")
OPTUNA_OVERRIDES = ["hydra.sweeper.n_trials=2"]
ISOLATED_PREFIXES = ("MLFLOW_", "RUNNER_", "OPTUNA_")
COMMAND_TIMEOUT = 420  # seconds for one README line or block
SERVER_START_TIMEOUT = 120  # seconds until a server answers

NOT_RUN = re.compile(r"#\s*not run:\s*(?P<reason>.*)$")
# a fenced block, also indented inside a list item (its body is dedented)
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.S | re.M)
RUNNER = re.compile(r"(?:^|[\s;&|(])python\s+-m\s+runner(?=\s|$)")
REGISTRY = re.compile(r"(?:^|[\s;&|(])(?:runner-registry|python\s+-m\s+runner\.registry(?:_cli)?)(?=\s|$)")
EVALUATE = re.compile(r"(?:^|[\s;&|(])python\s+-m\s+runner\.evaluate(?=\s|$)")
OPTUNA_PRESET = re.compile(r"(?:^|\s)sweep=optuna\w*(?=\s|$)")
SERVER = re.compile(r"^(?:\S+=\S+\s+)*(?:\S*/)?(?:mlflow\s+(?:ui|server|models\s+serve)|make\s+(?:ui|server))(?=\s|$)")
MAKE = re.compile(r"^(?P<env>(?:\S+=\S+\s+)*)make\s+(?P<rest>.*)$")
ENV_LINE = re.compile(r"^(?:export|source|\.)\s")


@dataclass
class Step:
    line: int  # where it starts in README.md
    kind: str  # bash | python
    text: str  # the command (bash, comments and continuations resolved) or the block (python)
    skip: str | None = None  # the `# not run:` reason
    block: int = 0  # index of its block


@dataclass
class Block:
    line: int
    lang: str
    body: str
    steps: list[Step] = field(default_factory=list)


def strip_comment(line: str) -> tuple[str, str]:
    """(command, comment): a `#` outside quotes, at the start or after a blank, starts a comment."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def parse_readme(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    blocks = []
    for index, match in enumerate(FENCE.finditer(text)):
        start = text.count("\n", 0, match.start()) + 2  # the block's first line, 1-based
        block = Block(start, match["lang"].strip(), textwrap.dedent(match["body"]))
        lines = block.body.splitlines()
        whole = NOT_RUN.match(lines[0].strip()) if lines else None
        reason = whole["reason"].strip() if whole else None
        if block.lang == "bash":  # line by line, also when marked whole (the fast tests read every line)
            pending, first = "", start
            for offset, raw in enumerate(lines):
                command, comment = strip_comment(raw)
                if not pending:
                    first = start + offset
                if command.endswith("\\"):
                    pending += command[:-1] + " "
                    continue
                command = (pending + command).strip()
                pending = ""
                mark = NOT_RUN.match(comment)
                if command:
                    skip = mark["reason"].strip() if mark else reason
                    block.steps.append(Step(first, "bash", command, skip, index))
            if whole and not block.steps:
                block.steps.append(Step(start, "bash", "", reason, index))
        elif whole or block.lang == "python":
            block.steps.append(Step(start, block.lang or "text", block.body, reason, index))
        blocks.append(block)
    return blocks


def steps() -> list[Step]:
    return [step for block in parse_readme() for step in block.steps]


# -- the fast tests: reading the README against the code ---------------------------------------------
def test_every_block_is_marked_or_runnable() -> None:
    problems = []
    for block in parse_readme():
        if block.lang not in ("bash", "python") and not block.steps:
            problems.append(
                f"README.md:{block.line}: a ```{block.lang or '(no language)'} block: use bash or "
                "python, or start it with `# not run: <reason>`"
            )
        for step in block.steps:
            if step.skip is not None and not step.skip:
                problems.append(f"README.md:{step.line}: `# not run:` needs a reason a reader can see")
    for number, line in enumerate(README.read_text().splitlines(), 1):
        comment = strip_comment(line.strip())[1]
        if "not run" in comment and not NOT_RUN.match(comment):
            problems.append(f"README.md:{number}: a mark must start its comment (`# not run: <reason>`)")
    assert not problems, "\n".join(problems)
    assert any(step.skip is None for step in steps()), "the README's blocks were not found"


CITED_TEST = re.compile(r"`(?:tests/)?(test_\w+\.py)(?:::(test_\w+))?`|`(test_\w+)`")


def test_every_test_the_readme_names_exists() -> None:
    """The README cites tests as evidence (`test_x.py::test_name`, then bare `test_name`s of that file on
    the same line): each must be a test function there, so a renamed test leaves no promise without proof."""
    defined = {
        path.name: set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
        for path in (REPO / "tests").glob("test_*.py")
    }
    cited, missing = 0, []
    for line in README.read_text().splitlines():
        file = None
        for match in CITED_TEST.finditer(line):
            file = match.group(1) or file
            name = match.group(2) or match.group(3)
            if not name or not file:  # a bare `test_mape` with no file before it is a metric's name
                continue
            cited += 1
            if name not in defined.get(file, set()):
                missing.append(f"{file}::{name}")
    assert cited > 10, "the README cites (almost) no test: the pattern no longer matches its style"
    assert not missing, f"the README names tests that do not exist: {missing}"


def test_the_readme_says_its_snippets_run_with_the_test_overrides() -> None:
    text = README.read_text()
    assert " ".join(TEST_OVERRIDES) in text and "tests/test_readme.py" in text, (
        "README.md should say, near the Quick start, that tests/test_readme.py runs every snippet with "
        f"`{' '.join(TEST_OVERRIDES)}`"
    )


def runner_args(command: str) -> list[str]:
    """The arguments after `python -m runner` (environment prefixes and later pipes dropped)."""
    words = shlex.split(command)
    for i in range(len(words) - 2):
        if words[i].endswith("python") and words[i + 1] == "-m" and words[i + 2] == "runner":
            rest = words[i + 3 :]
            for stop in ("|", "&&", ";", "||"):
                if stop in rest:
                    rest = rest[: rest.index(stop)]
            return rest
    raise AssertionError(f"no `python -m runner` in {command!r}")


def composable(args: list[str]) -> tuple[list[str], str | None]:
    """The Hydra overrides of a runner command line and its --config-dir (flags without config dropped)."""
    overrides, config_dir, words = [], None, list(args)
    while words:
        word = words.pop(0)
        if word in ("--config-dir", "-cd"):
            config_dir = words.pop(0)
        elif word.startswith("--config-dir="):
            config_dir = word.split("=", 1)[1]
        elif word in ("--cfg", "-c", "--package", "-p"):
            words.pop(0)
        elif word.startswith("-"):
            assert word in ("--multirun", "-m", "--help", "-h", "--info", "--resolve"), f"unknown flag {word}"
        else:
            overrides.append(word)
    return overrides, config_dir


def expansions(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each sweep (`a=1,2 b=x,y` -> [a=1 b=x], [a=2 b=x], [a=1 b=y]):
    every option a sweep names must compose, without composing the whole grid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts, choices = [], []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override() and not override.is_hydra_override() and override.value_type is not None:
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # an Optuna search space (interval(...), tag(...)): not Hydra's to expand
                firsts.append(None)
                choices.append([])
                continue
            key = override.get_key_element()
            firsts.append(f"{key}={values[0]}")
            choices.append([f"{key}={value}" for value in values])
        else:
            firsts.append(text)
            choices.append([])
    base = [item for item in firsts if item is not None]
    out = [base]
    for i, values in enumerate(choices):
        for value in values[1:]:
            out.append([value if j == i else item for j, item in enumerate(firsts) if item is not None])
    return out


def runner_lines() -> list[Step]:
    return [step for step in steps() if step.kind == "bash" and RUNNER.search(step.text)]


def make_run_step() -> Step:
    """`make run`'s recipe, with RUN_ARGS as the slow test sets it."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(?P<command>.*)$", makefile, re.M)
    assert recipe and "$(RUN_ARGS)" in recipe["command"], "the Makefile's run target should end with $(RUN_ARGS)"
    command = recipe["command"].replace("$(BIN)/", "").replace("$(RUN_ARGS)", " ".join(TEST_OVERRIDES))
    return Step(0, "bash", command)


@pytest.mark.parametrize(
    "step",
    [*runner_lines(), make_run_step()],
    ids=lambda step: f"README.md:{step.line}" if step.line else "Makefile:run",
)
def test_runner_commands_compose_and_validate(step: Step, tmp_path: Path) -> None:
    """Hydra composes the line's overrides, as written and as the slow test runs it (also for lines marked
    not run: SLURM, Ray) and the runner's own validation accepts them; nothing is trained, no store opened."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from runner.config.schema import validate

    overrides, config_dir = composable(runner_args(step.text))
    as_tested, _ = composable(runner_args(as_run(step.text)))
    if config_dir:
        # the block's own set-up lines (mkdir, cp) make the folder, in a scratch copy of the config
        shutil.copytree(REPO / "conf", tmp_path / "conf")
        for other in steps():
            if other.block == step.block and other.line < step.line and other.text.startswith(("mkdir", "cp")):
                subprocess.run(["bash", "-c", other.text], cwd=tmp_path, check=True, timeout=30)
        search = [f"hydra.searchpath=[file://{(tmp_path / config_dir).resolve()}]"]
    else:
        search = []
    for variant in [*expansions(overrides), expansions(as_tested)[0]]:
        variant = [*variant, *search]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_module(config_module="runner.conf"):
                cfg = compose(config_name="config", overrides=variant)
            validate(cfg)
        except Exception as error:
            pytest.fail(f"README.md:{step.line}: {step.text}\n  overrides {variant}: {type(error).__name__}: {error}")
        finally:
            GlobalHydra.instance().clear()


def cli_lines(pattern: re.Pattern) -> list[Step]:
    return [step for step in steps() if step.kind == "bash" and pattern.search(step.text)]


def _after(command: str, pattern: re.Pattern) -> list[str]:
    words = shlex.split(command[pattern.search(command).end() :])
    for stop in ("|", "&&", ";", "||", ">"):
        if stop in words:
            words = words[: words.index(stop)]
    return words


def _parses(parse, words: list[str], where: str) -> None:
    """argparse accepts the line (subcommand, positionals, flags, required options); it exits 2 if not."""
    try:
        parse(words)
    except SystemExit as error:
        pytest.fail(f"{where}: the command line does not parse ({error.code}): {' '.join(words)}")


@pytest.mark.parametrize("step", cli_lines(REGISTRY), ids=lambda step: f"README.md:{step.line}")
def test_registry_commands_exist(step: Step, capsys: pytest.CaptureFixture) -> None:
    from runner.registry.cli import build_parser

    words = _after(step.text, REGISTRY)
    assert words, f"README.md:{step.line}: `runner-registry` without a subcommand"
    with pytest.raises(SystemExit) as help_exit:  # `runner-registry SUBCOMMAND --help`, in this process
        build_parser().parse_args([words[0], "--help"])
    assert help_exit.value.code == 0, f"README.md:{step.line}: runner-registry {words[0]} --help failed"
    _parses(build_parser().parse_args, words, f"README.md:{step.line}")


@pytest.mark.parametrize("step", cli_lines(EVALUATE), ids=lambda step: f"README.md:{step.line}")
def test_evaluate_command_lines_parse(step: Step) -> None:
    from runner.forecast.evaluate import parse_args

    _parses(parse_args, _after(step.text, EVALUATE), f"README.md:{step.line}")


# -- the slow test: running the README ------------------------------------------------------------------
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    return env


def as_run(command: str) -> str:
    """The line as the test runs it: the listed overrides appended to runner commands, make without
    re-installing."""
    extra = [*TEST_OVERRIDES, *(OPTUNA_OVERRIDES if OPTUNA_PRESET.search(command) else [])]
    make = MAKE.match(command)
    if make:
        target = make["rest"].split()[0] if make["rest"].split() else ""
        args = f' RUN_ARGS="{" ".join(extra)}"' if target == "run" else ""
        return f"{make['env']}make -o .venv/.installed {make['rest']}{args}"
    if RUNNER.search(command):
        return f"{command} {' '.join(extra)}"
    return command


def server_port(command: str, scratch: Path) -> int:
    match = re.search(r"--port[ =](\d+)", command)
    if match:
        return int(match[1])
    if re.search(r"make\s+ui", command):
        make_ui = re.search(r"UI_PORT=(\d+)", command) or re.search(
            r"^UI_PORT \?= (\d+)$", (scratch / "Makefile").read_text(), re.M
        )
        return int(make_ui[1])
    return 5000  # mlflow's default, and make server's


def port_answers(port: int) -> bool:
    for path in ("/health", "/ping"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
    return False


def editable_install_state() -> str:
    """What points this venv at a source tree: the editable finder and direct_url.json of the project."""
    digest = hashlib.sha256()
    for path in sorted(VENV.glob("lib/python*/site-packages/*")):
        if path.name.startswith("__editable__") or (path.name.startswith("forecast_runner") and path.is_dir()):
            for file in sorted(path.rglob("*") if path.is_dir() else [path]):
                if file.is_file() and file.suffix != ".pyc":
                    digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def make_scratch(scratch: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, scratch / name)
    (scratch / ".venv").symlink_to(VENV, target_is_directory=True)


def never_reinstalls(command: str, scratch: Path, env: dict[str, str]) -> None:
    """`make -n` of the line as run must show no venv or pip step."""
    dry = as_run(command).replace("make -o", "make -n -o", 1)
    result = subprocess.run(["bash", "-c", dry], cwd=scratch, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{dry}: {result.stderr}"
    assert not re.search(r"pip install|-m venv", result.stdout), f"{dry} would re-install:\n{result.stdout}"


def runs_not_finished(db: Path) -> list[tuple[str, str]]:
    """(run name, status) of every run in the store that is not FINISHED (a FAILED run is a README bug)."""
    import sqlite3

    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT name, status FROM runs WHERE status != 'FINISHED'").fetchall()


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    scratch = tmp_path / "clone"
    scratch.mkdir()
    make_scratch(scratch)
    before = editable_install_state()
    base_env = clean_env()
    servers: list[ServerProcess] = []
    log = []
    started = time.monotonic()
    env = dict(base_env)  # one reader's shell: `export` and `source` lines change it for what follows
    try:
        for step in steps():
            if step.skip is not None:
                log.append(f"README.md:{step.line}: not run ({step.skip})")
                continue
            t0 = time.monotonic()
            if step.kind == "python":
                result = subprocess.run(
                    [sys.executable, "-c", step.text],
                    cwd=scratch,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                )
                command = f"python block\n{step.text}"
            elif ENV_LINE.match(step.text):
                command = step.text
                result = subprocess.run(
                    ["bash", "-c", f"{step.text}\nenv -0"],
                    cwd=scratch,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if result.returncode == 0:
                    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
            elif SERVER.match(step.text):
                command = as_run(step.text)
                if MAKE.match(step.text):
                    never_reinstalls(step.text, scratch, env)
                port = server_port(step.text, scratch)
                assert not port_answers(port), f"README.md:{step.line}: port {port} is taken before `{command}`"
                servers.append(
                    ServerProcess(["bash", "-c", command], tmp_path / f"server-{step.line}.log", cwd=scratch, env=env)
                )
                try:
                    servers[-1].start(lambda port=port: port_answers(port), SERVER_START_TIMEOUT, poll_seconds=1)
                except ServerDidNotStart as error:
                    pytest.fail(f"README.md:{step.line}: `{command}` on port {port}: {error}")
                log.append(f"README.md:{step.line}: {time.monotonic() - t0:5.1f}s  {command}  (serving on {port})")
                continue
            else:
                command = as_run(step.text)
                if MAKE.match(step.text):
                    never_reinstalls(step.text, scratch, env)
                result = subprocess.run(
                    ["bash", "-c", command],
                    cwd=scratch,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                )
            output = (result.stdout + result.stderr)[-6000:]
            assert result.returncode == 0, (
                f"README.md:{step.line}: exit {result.returncode}\n{command}\n--- output (end) ---\n{output}"
            )
            if OURS.match(step.text):  # the runner's own commands print no library warning or deprecation
                noise = [ln for ln in (result.stdout + result.stderr).splitlines() if NOISE.search(ln)]
                assert not noise, f"README.md:{step.line}: `{command}` printed warnings:\n" + "\n".join(noise[:10])
            log.append(f"README.md:{step.line}: {time.monotonic() - t0:5.1f}s  {command.splitlines()[0][:110]}")
    finally:
        # the whole process group of each (the server and its workers); SIGKILL for a group that outlives SIGTERM
        leftover = [server.command[-1] for server in servers if not server.stop(term_seconds=30)]
        print("\n".join(log), f"\ntotal {time.monotonic() - started:.0f}s", sep="\n")
    assert not leftover, f"server processes still running 30 s after SIGTERM (killed): {leftover}"
    unfinished = runs_not_finished(scratch / "outputs" / "mlflow.db")
    assert not unfinished, f"the README's commands left runs that did not finish: {unfinished}"
    assert editable_install_state() == before, "the README's commands changed this venv's editable install"
