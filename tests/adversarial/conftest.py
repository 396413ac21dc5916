"""The adversarial suite: attacks on every promise of the README's "Behaviour you can rely on".

Written by an adversarial tester against the change of issues 7 and 8; each test first failed (a finding,
see ``FINDINGS.md``, where each says how it was fixed or decided) or held. The fixtures are the project's
(``tests/conftest.py``: one emulator per session, connections from AIRFLOW_CONN_* variables); the DAGs in
``dags/`` are in a bundle of their own, configured there.
"""
