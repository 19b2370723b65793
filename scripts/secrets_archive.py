"""Back up and restore a cluster's controller secrets (cluster_secrets_dir) as one ansible-vault
encrypted archive.

    scripts/secrets export --secrets-dir DIR --output FILE [--vault-password-file F]
    scripts/secrets import --secrets-dir DIR --input FILE [--vault-password-file F] [--force]

The archive is a tar.gz of the directory, encrypted with ansible-vault (AES256); the plain tar never
touches the disk outside a private temporary directory. Import refuses to replace secrets that differ
from the archive's unless --force is given: a live cluster's CA, keys and passwords are never
overwritten by accident. Without --vault-password-file (or CF_VAULT_PASSWORD_FILE), ansible-vault
asks for the password.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


class SecretsError(Exception):
    """A refusal or failure with what to do about it."""


def ansible_vault() -> str:
    """ansible-vault of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("ansible-vault")
    found = str(beside) if beside.exists() else shutil.which("ansible-vault")
    if not found:
        raise SecretsError("ansible-vault not found: run scripts/bootstrap (it installs the controller venv)")
    return found


def _vault(action: str, source: Path, target: Path, password_file: str | None) -> None:
    command = [ansible_vault(), action, "--output", str(target), str(source)]
    if password_file:
        command[2:2] = ["--vault-password-file", password_file]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SecretsError(f"ansible-vault {action} failed: {done.stderr.strip() or done.stdout.strip()}")


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def export_secrets(secrets_dir: Path, output: Path, password_file: str | None = None) -> int:
    """Write the encrypted archive of ``secrets_dir`` to ``output`` (0600); returns the file count."""
    if not secrets_dir.is_dir():
        raise SecretsError(f"{secrets_dir} is not a directory: name the cluster's cluster_secrets_dir")
    files = _files(secrets_dir)
    if not files:
        raise SecretsError(f"{secrets_dir} holds no files: nothing to back up")
    with tempfile.TemporaryDirectory(prefix="cf-secrets-") as private:
        os.chmod(private, 0o700)
        plain = Path(private) / "secrets.tar.gz"
        with tarfile.open(plain, "w:gz") as archive:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o600
                archive.addfile(info, io.BytesIO(content))
        encrypted = Path(private) / "secrets.vault"
        _vault("encrypt", plain, encrypted, password_file)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(encrypted, output)
        os.chmod(output, 0o600)
    return len(files)


def _read_archive(archive_file: Path, password_file: str | None) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="cf-secrets-") as private:
        os.chmod(private, 0o700)
        plain = Path(private) / "secrets.tar.gz"
        _vault("decrypt", archive_file, plain, password_file)
        contents: dict[str, bytes] = {}
        with tarfile.open(plain, "r:gz") as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or Path(member.name).is_absolute() or ".." in parts:
                    raise SecretsError(
                        f"{archive_file}: unexpected member {member.name!r}; not a secrets archive"
                    )
                handle = archive.extractfile(member)
                contents[member.name] = handle.read() if handle else b""
    return contents


def import_secrets(
    secrets_dir: Path, archive_file: Path, password_file: str | None = None, force: bool = False
) -> int:
    """Restore the archive into ``secrets_dir`` (dirs 0700, files 0600); returns the file count.

    Secrets already there that differ from the archive's are kept, and the import fails, unless
    ``force``."""
    if not archive_file.is_file():
        raise SecretsError(f"{archive_file} does not exist")
    contents = _read_archive(archive_file, password_file)
    existing = _files(secrets_dir) if secrets_dir.is_dir() else {}
    differ = sorted(n for n, c in contents.items() if n in existing and existing[n] != c)
    if differ and not force:
        raise SecretsError(
            f"{secrets_dir} already holds other secrets ({', '.join(differ[:5])}"
            f"{' ...' if len(differ) > 5 else ''}): "
            "they may be the live cluster's. Move the directory aside, or pass --force to replace them."
        )
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    for name, content in contents.items():
        target = secrets_dir / name
        for parent in reversed(target.relative_to(secrets_dir).parents[:-1]):
            (secrets_dir / parent).mkdir(exist_ok=True)
            os.chmod(secrets_dir / parent, 0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(target, 0o600)
    return len(contents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/secrets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    password_help = "file holding the vault password (default: $CF_VAULT_PASSWORD_FILE, else a prompt)"
    export = sub.add_parser("export", help="write the encrypted archive of a secrets directory")
    export.add_argument("--secrets-dir", type=Path, required=True)
    export.add_argument("--output", type=Path, required=True)
    export.add_argument(
        "--vault-password-file", default=os.environ.get("CF_VAULT_PASSWORD_FILE"), help=password_help
    )
    restore = sub.add_parser("import", help="restore a secrets directory from an encrypted archive")
    restore.add_argument("--secrets-dir", type=Path, required=True)
    restore.add_argument("--input", type=Path, required=True)
    restore.add_argument(
        "--vault-password-file", default=os.environ.get("CF_VAULT_PASSWORD_FILE"), help=password_help
    )
    restore.add_argument(
        "--force", action="store_true", help="replace secrets that differ from the archive's"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "export":
            count = export_secrets(args.secrets_dir, args.output, args.vault_password_file)
            print(f"{count} files of {args.secrets_dir} encrypted into {args.output}")
        else:
            count = import_secrets(args.secrets_dir, args.input, args.vault_password_file, args.force)
            print(f"{count} files restored into {args.secrets_dir} from {args.input}")
    except SecretsError as exc:
        print(f"scripts/secrets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
