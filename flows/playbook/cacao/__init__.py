"""CACAO 2.0 for stanch playbooks: export, import and validation of OASIS CACAO documents.

:func:`export_document` turns a loaded playbook into a CACAO 2.0 document (deterministic
ids and dates, OpenC2 commands, the stanch extension), :func:`import_document` turns a CACAO
document into a stanch playbook with a row per CACAO step saying what it became, and
:func:`check_document` validates one against the OASIS schemas and the semantic rules.
"""

from flows.playbook.cacao.export import export_document, export_text
from flows.playbook.cacao.import_ import CacaoImport, import_document
from flows.playbook.cacao.rows import MappingRow
from flows.playbook.cacao.validate import CacaoError, CacaoIssue, CacaoRule, check_document

__all__ = [
    "CacaoError",
    "CacaoImport",
    "CacaoIssue",
    "CacaoRule",
    "MappingRow",
    "check_document",
    "export_document",
    "export_text",
    "import_document",
]
