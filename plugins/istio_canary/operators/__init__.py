"""Thin Airflow operators: read inputs, call hooks and core, log, push XCom."""
