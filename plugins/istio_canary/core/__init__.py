"""Pure release logic: no Airflow, no network. Decisions live here."""
