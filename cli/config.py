"""Where the command finds its server and key (flags, environment, `assay login` profiles) and
what a repository's `assay.yaml` asks for (checked against its JSON Schema)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

from cli.client import CliError, shown_url

DEFAULT_URL = "http://127.0.0.1:8000"
REPOSITORY_FILE = "assay.yaml"


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str


def config_dir() -> Path:
    if os.environ.get("ASSAY_CONFIG_DIR"):
        return Path(os.environ["ASSAY_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "assay"


def _profiles_path() -> Path:
    return config_dir() / "profiles.json"


def read_profiles() -> dict[str, dict[str, str]]:
    path = _profiles_path()
    if not path.exists():
        return {}
    try:
        profiles = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(profiles, dict) or not all(
        isinstance(entry, dict) and all(isinstance(value, str) for value in entry.values())
        for entry in profiles.values()
    ):
        raise CliError(f"{path} is not a file of profiles: fix it, or remove it and log in again")
    return profiles


def save_profile(name: str, url: str, api_key: str) -> Path:
    """Writes the profiles readable by their owner only (they hold keys): into a new file,
    made 0600, that then replaces the old one (a file already readable by others is never
    written to, a crash leaves the old profiles whole, and a link there is replaced, not
    followed)."""
    path = _profiles_path()
    profiles = read_profiles()
    profiles[name] = {"url": url, "api_key": api_key}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=".profiles-", text=True)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(profiles, handle, indent=2)
        os.replace(written, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(written)
        raise
    return path


def server(
    url: str | None, api_key: str | None, profile: str | None, repository_url: str | None = None
) -> Server:
    """The URL: --url, ASSAY_URL, the repository's `server`, the profile's, the default. The
    key: --api-key, ASSAY_API_KEY, else the profile's, and then only for the profile's own
    URL: a repository (or a mistyped flag) naming another server never receives a profile's
    key. A key given by flag or environment goes to the URL found (the README says to set
    ASSAY_URL beside it in CI). A profile named by --profile comes before the environment and
    the repository, as a flag does: the environment's key never goes to its server."""
    named = profile or os.environ.get("ASSAY_PROFILE")
    name = named or "default"
    chosen = read_profiles().get(name) or {}
    if named and not chosen:  # a mistyped name, not a fall back to no profile at all
        named_by = "--profile" if profile else "ASSAY_PROFILE"
        raise CliError(
            f"no profile named {name!r} (given by {named_by}): create it with"
            f" `assay login --profile {name}`"
        )
    if profile:
        environment_url = environment_key = repository_url = None
    else:
        environment_url, environment_key = (
            os.environ.get("ASSAY_URL"),
            os.environ.get("ASSAY_API_KEY"),
        )
        if not url and (api_key or environment_key) and environment_url is not None:
            _check_set(environment_url)
    found_url = url or environment_url or repository_url or chosen.get("url")
    found_url = server_url((found_url or DEFAULT_URL).rstrip("/"))
    found_key = api_key or environment_key
    if not found_key and chosen.get("api_key"):
        profile_url = (chosen.get("url") or DEFAULT_URL).rstrip("/")
        if not same_server(profile_url, found_url):
            raise CliError(
                f"the key of profile {name!r} is for {shown_url(profile_url)}, not"
                f" {shown_url(found_url)}:"
                " give its key with --api-key or ASSAY_API_KEY"
            )
        found_key = chosen["api_key"]
    if not found_key:
        raise CliError("no API key: set ASSAY_API_KEY, pass --api-key, or run `assay login` once")
    return Server(url=found_url, api_key=found_key)


def _check_set(environment_url: str) -> None:
    """An ASSAY_URL set empty (a CI variable that is not defined renders as "") is no URL
    left unsaid: the key given beside it would go to assay.yaml's `server`, or the default."""
    if not environment_url.strip():
        raise CliError(
            "ASSAY_URL is set but empty (a CI variable not defined?): set it to the server's"
            " URL, or unset it; the API key given is sent nowhere else"
        )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_server(one: str, other: str) -> bool:
    """Whether two URLs name one server root, written either way: the scheme and host in any
    case, the default port given or not, a trailing slash or not."""

    def root(url: str) -> tuple[str, str, int | None, str, bytes] | None:
        try:
            parts = httpx.URL(url.strip())
        except httpx.InvalidURL:
            return None
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
        return scheme, parts.host.lower(), port, parts.path.rstrip("/"), parts.query

    found = root(one)
    return found is not None and found == root(other)


def server_url(url: str) -> str:
    """A usage error for what cannot be a server's root (rather than, retried for seconds,
    an unreachable server, or a 404 for every request)."""
    url = url.strip().rstrip("/")
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL as exc:
        shown = "" if "@" in url else f" {url!r}"
        raise CliError(f"the server's URL{shown} is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise CliError(
            f"the server's URL {shown_url(url)!r} is not an http(s) URL: give one such as"
            f" {DEFAULT_URL}"
            " (--url, ASSAY_URL, assay.yaml's `server` or the profile)"
        )
    if parts.path.rstrip("/").endswith("/api/v1"):
        raise CliError(f"give the server's URL without /api/v1 (its root): not {shown_url(url)!r}")
    return url


# --- assay.yaml ---------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    text = resources.files("cli").joinpath("assay.schema.json").read_text()
    return dict(json.loads(text))


def repository_config(path: Path | None) -> tuple[dict[str, Any], Path | None]:
    """The repository's config and its folder (files in it are relative to that): the file
    named, else ./assay.yaml when there is one, else nothing."""
    if path is None:
        path = Path(REPOSITORY_FILE)
        if not path.exists():
            return {}, None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    validator = jsonschema.Draft202012Validator(schema())
    problems = sorted(validator.iter_errors(loaded), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CliError(f"{path}: {where}: {first.message}{more}")
    return dict(loaded), path.parent


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint in one line: what is wrong and where (1-based), without the quoted
    lines its own message spreads over several."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "cannot be read"
        mark = exc.problem_mark or exc.context_mark
        if mark is None:
            return problem
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())
