"""`pyvmm.errors.Log`: logging as pyvmm used it, with logging imported only when needed."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.errors import INFO, Log

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )


def test_debug_and_info_import_nothing_until_logging_is_imported() -> None:
    result = run_python(
        "import sys\n"
        "from pyvmm.errors import INFO, Log\n"
        "log = Log('pyvmm.test')\n"
        "log.debug('a %d', 1)\n"
        "log.info('b %d', 2)\n"
        "print(log.isEnabledFor(INFO), 'logging' in sys.modules, 'traceback' in sys.modules)"
    )
    assert result.stdout == "False False False\n"
    assert result.stderr == ""


def test_a_warning_goes_where_logging_sends_it() -> None:
    """Unconfigured: logging's last resort, the message alone on stderr."""
    result = run_python("from pyvmm.errors import Log\nLog('pyvmm.test').warning('w %s', 'x')")
    assert result.stderr == "w x\n"


def test_the_cli_configuration_applies_to_the_first_record() -> None:
    result = run_python(
        "import sys\n"
        "from pyvmm.errors import WARNING, Log, configure_logging\n"
        "configure_logging(level=WARNING, format='pyvmm: %(message)s', stream=sys.stdout)\n"
        "print('logging' in sys.modules)\n"
        "Log('pyvmm.test').info('dropped')\n"
        "Log('pyvmm.test').warning('kept %d', 3)"
    )
    assert result.stdout == "False\npyvmm: kept 3\n"


def test_a_level_below_warning_configures_at_once() -> None:
    result = run_python(
        "import sys\n"
        "from pyvmm.errors import INFO, Log, configure_logging\n"
        "configure_logging(level=INFO, format='pyvmm: %(message)s', stream=sys.stdout)\n"
        "Log('pyvmm.test').info('shown %d', 4)"
    )
    assert result.stdout == "pyvmm: shown 4\n"


def test_records_name_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pyvmm"):
        Log("pyvmm.test").info("from %s", "here")
        assert Log("pyvmm.test").isEnabledFor(INFO)
    (record,) = caplog.records
    assert (record.name, record.getMessage()) == ("pyvmm.test", "from here")
    assert (record.funcName, record.filename) == (
        "test_records_name_the_caller",
        Path(__file__).name,
    )
