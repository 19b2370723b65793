"""scripts/secrets: export and import of a cluster's controller secrets round-trip, encrypted."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
from pathload import load

ROOT = pathlib.Path(__file__).resolve().parents[2]
archive = load("secrets_archive", ROOT / "scripts" / "secrets_archive.py")

SECRETS = {
    "ssh/id_ed25519": b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n",
    "tls/ca.key": b"ca-private-key-material",
    "celery/redis_password": b"Zr4nd0mRedisPassw0rd",
    "web/spark-webui.password": b"GatewayPasswordValue",
}


@pytest.fixture()
def secrets_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "cluster"
    for name, content in SECRETS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o600)
    return root


@pytest.fixture()
def password_file(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "vault-pass"
    path.write_text("correct horse battery staple\n")
    return str(path)


def test_export_then_import_round_trips_every_file_privately(secrets_dir, password_file, tmp_path):
    out = tmp_path / "backup.vault"
    assert archive.export_secrets(secrets_dir, out, password_file) == len(SECRETS)
    raw = out.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    assert all(content not in raw for content in SECRETS.values())
    assert out.stat().st_mode & 0o777 == 0o600

    restored = tmp_path / "restored"
    assert archive.import_secrets(restored, out, password_file) == len(SECRETS)
    for name, content in SECRETS.items():
        assert (restored / name).read_bytes() == content
        assert (restored / name).stat().st_mode & 0o777 == 0o600
    assert restored.stat().st_mode & 0o777 == 0o700
    assert (restored / "ssh").stat().st_mode & 0o777 == 0o700


def test_import_never_replaces_different_secrets_without_force(secrets_dir, password_file, tmp_path):
    out = tmp_path / "backup.vault"
    archive.export_secrets(secrets_dir, out, password_file)
    (secrets_dir / "tls/ca.key").write_bytes(b"the live cluster's newer CA key")
    with pytest.raises(archive.SecretsError, match="--force"):
        archive.import_secrets(secrets_dir, out, password_file)
    assert (secrets_dir / "tls/ca.key").read_bytes() == b"the live cluster's newer CA key"
    archive.import_secrets(secrets_dir, out, password_file, force=True)
    assert (secrets_dir / "tls/ca.key").read_bytes() == SECRETS["tls/ca.key"]


def test_import_of_identical_secrets_is_a_no_op_and_allowed(secrets_dir, password_file, tmp_path):
    out = tmp_path / "backup.vault"
    archive.export_secrets(secrets_dir, out, password_file)
    assert archive.import_secrets(secrets_dir, out, password_file) == len(SECRETS)


def test_wrong_vault_password_is_refused(secrets_dir, password_file, tmp_path):
    out = tmp_path / "backup.vault"
    archive.export_secrets(secrets_dir, out, password_file)
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not it\n")
    with pytest.raises(archive.SecretsError, match="decrypt"):
        archive.import_secrets(tmp_path / "elsewhere", out, str(wrong))
    assert not (tmp_path / "elsewhere").exists()


def test_empty_or_missing_directory_is_refused(tmp_path, password_file):
    with pytest.raises(archive.SecretsError, match="not a directory"):
        archive.export_secrets(tmp_path / "missing", tmp_path / "x.vault", password_file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(archive.SecretsError, match="no files"):
        archive.export_secrets(tmp_path / "empty", tmp_path / "x.vault", password_file)


def test_command_line_round_trip(secrets_dir, password_file, tmp_path):
    out = tmp_path / "cli.vault"
    script = ROOT / "scripts" / "secrets"
    done = subprocess.run(
        [str(script), "export", "--secrets-dir", str(secrets_dir), "--output", str(out)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CF_VAULT_PASSWORD_FILE": password_file},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    again = subprocess.run(
        [str(script), "import", "--secrets-dir", str(secrets_dir), "--input", str(out)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CF_VAULT_PASSWORD_FILE": password_file},
        check=False,
    )
    assert again.returncode == 0 and "restored" in again.stdout, again.stderr
