//! The store implementation on one database: mounted once per database by [`super`] (`for_sqlite`,
//! `for_postgres`), each time with `DB` naming that database. One file per role trait.

use super::DB;

mod accounts;
mod console;
mod database;
mod deliveries;
mod events;
mod recoveries;
mod retention;
mod stats;
mod webhooks;
