#!/bin/sh
# The role the service runs as: it reads and writes rows, and nothing more. The tables belong to
# the owner role (POSTGRES_USER), which only the one-shot migration uses; every table and
# sequence the owner creates from now on is granted to the app role by default. Run once, when
# the database is created (compose mounts this into /docker-entrypoint-initdb.d/);
# tests/integration/test_database_roles.py runs it against a database of its own.
set -eu
: "${POSTGRES_USER:?the owner role}" "${POSTGRES_DB:?the database}"
: "${APP_DB_PASSWORD:?the app role's password}"
APP_DB_USER="${APP_DB_USER:-payments_app}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"app_user";
SQL
