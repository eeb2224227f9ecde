//! The driver conformance lab: real PostgreSQL drivers connect, with each case's settings, to
//! four real servers — one trusted, one whose certificate names another host, an impostor
//! with a certificate from another CA, and one without TLS — and the servers' own logs say
//! which ones each driver reached. The engine's verdict on a Pod that hands a driver the
//! same settings must never be a pass where the driver reached an impostor. How the lab
//! works and what it found: docs/drivers.md.

pub mod cases;
pub mod clients;
pub mod docs;
pub mod matrix;
pub mod research;
pub mod servers;
