"""Decorated handlers keep their signature for type checkers: mypy --strict on a sample
module that calls one wrongly must report exactly that call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = """
from pydantic import BaseModel
from worker import Message, Router

router = Router()


class Greeting(BaseModel):
    name: str


@router.handler("greet")
async def greet(greeting: Greeting, message: Message) -> None:
    return None


async def caller(message: Message) -> None:
    await greet(Greeting(name="a"), message)  # fine
    await greet(1, 2, 3, "wrong")  # the error mypy must find
"""


def test_a_wrong_call_to_a_decorated_handler_is_a_type_error(tmp_path: Path) -> None:
    sample = tmp_path / "greet_sample.py"
    sample.write_text(SAMPLE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert errors, out.stdout
    wrong = SAMPLE.splitlines().index('    await greet(1, 2, 3, "wrong")  # the error mypy must find') + 1
    assert all(f":{wrong}:" in line for line in errors), out.stdout  # only the wrong call's line
    assert 'Too many arguments for "greet"' in out.stdout or "incompatible type" in out.stdout
