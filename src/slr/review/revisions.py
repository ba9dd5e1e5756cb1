"""The runs a report compares, read where they live: a git revision (a commit, a branch, a tag, `HEAD~1`), a
`dvc exp` experiment (its commit under refs/exps/), or the workspace on disk.

Files of a revision are read from git objects (`git ls-tree`, then one `git cat-file --batch` for all of them), never
checked out, so a report never touches the workspace.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from slr.errors import UserError

WORKSPACE = "workspace"
# dvc exp refs: refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name>
EXP_REF = re.compile(r"^refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)$")


def git(root: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run git in `root` and return its stdout; a failure is a UserError with git's message."""
    result = subprocess.run(["git", *args], cwd=root, input=input, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"git {' '.join(args[:3])} failed in {root}: {message[-1] if message else 'no message'}")
    return result.stdout


def repo_root(start: Path) -> Path:
    """The top folder of the git repository holding `start`."""
    try:
        return Path(git(start, "rev-parse", "--show-toplevel").decode().strip())
    except UserError:
        raise UserError(f"{start.resolve()} is not in a git repository: run slr-report in your clone") from None


@dataclass
class Revision:
    """One run's files: `name` as the user gave it, `sha` its commit (None for the workspace)."""

    name: str
    sha: str | None
    root: Path
    _blobs: dict[str, str] = field(default_factory=dict, repr=False)  # path -> blob id (git revisions)
    _tracked: frozenset[str] = field(default_factory=frozenset, repr=False)  # git-visible paths (workspace)

    @property
    def label(self) -> str:
        """The name, with the commit it stands for when that is not the name itself."""
        if self.sha is None:
            return self.name
        if self.sha.startswith(self.name) or self.name.startswith(self.sha[:7]):
            return self.sha[:7]
        return f"{self.name} ({self.sha[:7]})"

    def files(self) -> list[str]:
        """Every file git holds in this revision (the workspace: the files git tracks or would, still on disk)."""
        if self.sha is not None:
            return list(self._blobs)
        return [p for p in self._tracked if (self.root / p).is_file()]

    def is_file(self, path: str) -> bool:
        return path in self._blobs if self.sha is not None else (self.root / path).is_file()

    def files_under(self, folder: str) -> list[str]:
        """Files below `folder` in this revision; in the workspace, every file on disk there, tracked or not."""
        prefix = folder.rstrip("/") + "/"
        if self.sha is not None:
            return sorted(p for p in self._blobs if p.startswith(prefix))
        base = self.root / folder
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """The content of each of `paths` this revision has (absent paths are left out)."""
        if self.sha is None:
            return {p: (self.root / p).read_bytes() for p in paths if (self.root / p).is_file()}
        wanted = [p for p in dict.fromkeys(paths) if p in self._blobs]
        if not wanted:
            return {}
        out = git(self.root, "cat-file", "--batch", input="".join(f"{self._blobs[p]}\n" for p in wanted).encode())
        contents, pos = {}, 0
        for path in wanted:  # each answer: "<id> blob <size>\n<content>\n"
            header_end = out.index(b"\n", pos)
            size = int(out[pos:header_end].split()[2])
            contents[path] = out[header_end + 1 : header_end + 1 + size]
            pos = header_end + 2 + size
        return contents

    def read(self, path: str) -> bytes | None:
        return self.read_many([path]).get(path)


def resolve(root: Path, name: str) -> Revision:
    """The revision `name` names: "workspace", anything `git rev-parse` knows, or a `dvc exp` name."""
    if not name or name.startswith("-"):  # git and dvc would take it for an option
        raise UserError(f"{name!r} is not a revision name")
    if name == WORKSPACE:
        tracked = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
        return Revision(name, None, root, _tracked=frozenset(filter(None, tracked)))
    try:
        sha = git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").decode().strip()
    except UserError:
        sha = experiment_sha(root, name)
    listing = git(root, "ls-tree", "-r", "-z", sha).decode(errors="surrogateescape").split("\0")
    blobs = {}
    for entry in filter(None, listing):  # "<mode> <type> <id>\t<path>"
        meta, path = entry.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob" and mode != "120000":  # links are not followed: their target is not the revision's
            blobs[path] = blob
    return Revision(name, sha, root, _blobs=blobs)


def experiments(root: Path) -> list[tuple[str, str, str]]:
    """Every `dvc exp` experiment of the repository: (name, its commit, its baseline commit), by name."""
    refs = git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/").decode().splitlines()
    found = []
    for line in refs:
        sha, ref = line.split(" ", 1)
        match = EXP_REF.match(ref)
        if match:
            found.append((match[3], sha, match[1] + match[2]))
    return sorted(found)


def experiment_sha(root: Path, name: str) -> str:
    """The commit of experiment `name`; a one-line error if no revision or experiment has that name, or several do."""
    shas = {sha for exp, sha, _ in experiments(root) if exp == name}
    if not shas:
        raise UserError(f"unknown revision {name!r}: not a git revision, branch or `dvc exp` name (see "
                        "`dvc exp list --all-commits`), nor `workspace`")
    if len(shas) > 1:
        raise UserError(f"experiment name {name!r} is taken by {len(shas)} experiments: give its commit instead "
                        f"({', '.join(sorted(s[:7] for s in shas))})")
    return shas.pop()
