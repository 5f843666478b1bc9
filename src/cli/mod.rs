//! The command line on top of the library, split as ripgrep splits its
//! flags: definitions ([`args`]), from flags to configs and inputs
//! ([`config`]), the commands ([`run`]); and what they show: text for
//! people ([`text`], [`progress`], [`plot`]), documents for programs
//! ([`report`]), files written whole ([`output_file`]) and never left half
//! written by Ctrl-C ([`signals`]), the timed loop of `bench` ([`bench`]),
//! and `train --nproc`'s ranks ([`launch`]).

pub mod args;
pub mod bench;
pub mod config;
pub mod launch;
pub mod output_file;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod signals;
pub mod text;
