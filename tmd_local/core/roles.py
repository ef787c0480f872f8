"""The four student modules, named once. Torch-free and import-free: everything else imports this.

`Role` is a str enum, so a role is written to JSON (teacher records, tmd.json, manifests, results)
as the same plain string it always was: `json.dumps(Role.ANALYZER) == '"analyzer"'`.
"""

from __future__ import annotations

from enum import Enum

from .errors import TmdError


class Role(str, Enum):
    ANALYZER = "analyzer"
    INFORMANT = "informant"
    REASONER = "reasoner"
    DRD = "drd"  # the one-module baseline (direct reasoning distillation)

    def __str__(self) -> str:  # f"{role}" reads "analyzer", not "Role.ANALYZER"
        return self.value


# Every role, in pipeline order; the order manifests list them in.
ROLES: tuple[str, ...] = tuple(role.value for role in Role)
# The three modules of the TMD pipeline (DRD is the baseline beside it).
TMD_ROLES: tuple[str, ...] = (Role.ANALYZER.value, Role.INFORMANT.value, Role.REASONER.value)


def role_named(name: str, where: str) -> Role:
    """`name` as a Role, or a one-line error at `where` (a flag or file:field) listing the roles."""
    try:
        return Role(name)
    except ValueError:
        raise TmdError(f"{where} {name}: unknown module (expected {', '.join(ROLES)})") from None
