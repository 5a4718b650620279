"""Every setting is documented where users look: the README's configuration table and service/settings.py's table."""

from __future__ import annotations

import re

from live_server import REPO

import service.settings
from service.settings import Settings


def documented(text: str) -> set[str]:
    """The APG_* variables named in the first cell of a markdown table's rows."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `APG_"):
            names |= set(re.findall(r"`(APG_[A-Z0-9_]+)`", line.split(" | ")[0]))
    return names


def test_every_setting_is_in_the_readme_and_the_settings_docstring():
    variables = {f"APG_{name.upper()}" for name in Settings.model_fields}
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Configuration (environment variables)") : readme.index("### Metrics")]
    assert variables - documented(section) == set(), "missing from README.md's configuration table"
    assert variables - documented(service.settings.__doc__) == set(), "missing from service/settings.py's table"
    assert documented(section) - variables - {"APG_HEALTHCHECK_URL"} == set(), "README documents unknown settings"
