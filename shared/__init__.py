"""The service library both sides use, one package per concern: settings, models and
migrations, the ledger, payments, infrastructure, observability, the CLI, the doctor, dev tools."""
