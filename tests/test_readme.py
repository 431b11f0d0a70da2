"""The README is part of the product: its commands, its settings table and CI agree with the code."""

import re
from pathlib import Path

from kdc_trio.config import Settings
from kdc_trio.settings_doc import BEGIN, END, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
START_CMD = "./dev serve"
TEST_CMD = "./dev test"


def first_screen() -> str:
    return "\n".join(README.splitlines()[:30])


def test_first_screen_has_the_two_commands():
    blocks = re.findall(r"```sh\n(.*?)\n```", first_screen(), re.S)
    assert blocks[:2] == [START_CMD, TEST_CMD]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_CMD in ci.splitlines()
    assert "KDC_REQUIRE_SERVICES=1" in ci


def test_settings_table_is_current():
    start, end = README.index(BEGIN), README.index(END) + len(END)
    assert README[start:end] == settings_markdown(), "run `python3 -m kdc_trio settings` and paste it into README.md"


def test_every_setting_is_documented_once():
    names = [env for env, _, _ in Settings.documented()]
    assert len(names) == len(set(names))
    for env in names:
        assert f"| `{env}` |" in README, env
