-- What a Supabase project has before any of its migrations run, recreated for the local
-- stand-in: the API roles, the `auth` schema with `auth.users` and the claim helpers, and the
-- default grants. Not a migration: a real project already has all of this.

do $$
begin
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end
$$;
grant anon, authenticated, service_role to authenticator;

create schema if not exists auth;
create table if not exists auth.users (
    id         uuid primary key,
    email      text,
    created_at timestamptz not null default now()
);

-- As in Supabase: the request's JWT claims, set per transaction by the API.
create or replace function auth.jwt() returns jsonb
    language sql stable
as $$
    select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
create or replace function auth.uid() returns uuid
    language sql stable
as $$
    select nullif(auth.jwt() ->> 'sub', '')::uuid
$$;
create or replace function auth.role() returns text
    language sql stable
as $$
    select auth.jwt() ->> 'role'
$$;

grant usage on schema public, auth to anon, authenticated, service_role;
-- Signing a user up is Auth's work; locally the stand-in does it as service_role.
grant select, insert on auth.users to service_role;
grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

-- Which migrations of supabase/migrations/ have been applied.
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version    text primary key,
    applied_at timestamptz not null default now()
);
