//! A filter as a stage of a chain: its plugin and its stream behind trait objects, so that one
//! chain runs filters of different types in the order a configuration gives.

use crate::env::Direction;
use crate::filter::{Cx, Filter, RootCx, Setup};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::outcome::{Answer, Body, Outcome};
use wasmgate_core::{ConfigError, LocalReply};

/// One filter's configured plugin, as a stage of a chain.
pub trait StagePlugin {
    /// The stage's state for one new stream.
    fn new_stream(&self) -> Box<dyn StageStream>;
    /// How often the stage's plugin tick runs ([`Filter::tick_period`]).
    fn tick_period(&self) -> Option<Duration>;
    /// The stage's plugin tick ([`Filter::on_tick`]).
    fn on_tick(&self, cx: &mut RootCx<'_>);
    /// The answer to a call the stage's plugin made ([`Filter::on_plugin_answer`]).
    fn on_plugin_answer(&self, cx: &mut RootCx<'_>, key: u64, answer: Answer);
}

/// One filter's state for one stream, as a stage of a chain's stream: the hooks of
/// [`Filter`], each outcome checked against the filter's [`Filter::USES`].
pub trait StageStream {
    /// [`Filter::on_request_headers`] or [`Filter::on_response_headers`].
    fn headers(&mut self, cx: &mut Cx<'_>, direction: Direction, end_of_stream: bool) -> Outcome;
    /// [`Filter::on_request_body`] or [`Filter::on_response_body`].
    fn body(&mut self, cx: &mut Cx<'_>, direction: Direction, body: Body<'_>) -> Outcome;
    /// [`Filter::on_answer`].
    fn answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome;
    /// [`Filter::on_wake`].
    fn wake(&mut self, cx: &mut Cx<'_>) -> Outcome;
    /// [`Filter::on_body_too_large`].
    fn body_too_large(&mut self, cx: &mut Cx<'_>, direction: Direction);
    /// [`Filter::on_done`].
    fn done(&mut self, cx: &mut Cx<'_>);
}

/// Configures filter `F` as a stage: its metrics and shared data are named as its own plugin's
/// would be (`setup` carries the filter's name and the plugin's).
pub fn configure<F: Filter>(
    setup: &Setup<'_>,
    json: &[u8],
) -> Result<Box<dyn StagePlugin>, ConfigError> {
    let plugin = F::configure(setup, json)?;
    Ok(Box::new(Configured::<F>(Rc::new(plugin))))
}

/// A configured plugin of filter `F`.
struct Configured<F: Filter>(Rc<F::Plugin>);

impl<F: Filter> StagePlugin for Configured<F> {
    fn new_stream(&self) -> Box<dyn StageStream> {
        Box::new(Staged(F::new_stream(&self.0)))
    }

    fn tick_period(&self) -> Option<Duration> {
        F::tick_period(&self.0)
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        F::on_tick(&self.0, cx);
    }

    fn on_plugin_answer(&self, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        F::on_plugin_answer(&self.0, cx, key, answer);
    }
}

/// A stream of filter `F`.
struct Staged<F: Filter>(F);

impl<F: Filter> Staged<F> {
    /// The outcome, or a 500 reply when `F` did not declare it in [`Filter::USES`] (as the frame
    /// answers a filter of its own: a bug must never skip a check).
    fn checked(outcome: Outcome) -> Outcome {
        let undeclared = match outcome {
            Outcome::NeedBody(_) => !F::USES.bodies,
            Outcome::Call(_) => !F::USES.callouts,
            Outcome::Wait { .. } => !F::USES.waits,
            _ => false,
        };
        if !undeclared {
            return outcome;
        }
        log::error!(
            "wasmgate {}: an outcome not declared in Filter::USES",
            F::NAME
        );
        Outcome::Reply(LocalReply::new(
            500,
            "internal_error",
            "The filter failed; the request was not forwarded.",
        ))
    }
}

impl<F: Filter> StageStream for Staged<F> {
    fn headers(&mut self, cx: &mut Cx<'_>, direction: Direction, end_of_stream: bool) -> Outcome {
        Self::checked(match direction {
            Direction::Request => self.0.on_request_headers(cx, end_of_stream),
            Direction::Response => self.0.on_response_headers(cx, end_of_stream),
        })
    }

    fn body(&mut self, cx: &mut Cx<'_>, direction: Direction, body: Body<'_>) -> Outcome {
        Self::checked(match direction {
            Direction::Request => self.0.on_request_body(cx, body),
            Direction::Response => self.0.on_response_body(cx, body),
        })
    }

    fn answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        Self::checked(self.0.on_answer(cx, answer))
    }

    fn wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        Self::checked(self.0.on_wake(cx))
    }

    fn body_too_large(&mut self, cx: &mut Cx<'_>, direction: Direction) {
        self.0.on_body_too_large(cx, direction);
    }

    fn done(&mut self, cx: &mut Cx<'_>) {
        self.0.on_done(cx);
    }
}
