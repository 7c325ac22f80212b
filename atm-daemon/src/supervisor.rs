//! Supervision of one plugin instance: build it from its config, run it, and when it fails,
//! panics, or returns before it was told to stop, log that with its name and start a fresh
//! instance after an exponential backoff. Other plugins are unaffected: each instance has its
//! own task and token.
//!
//! Each run of a plugin is a task of its own, so that a panic ends that task only and comes back
//! here as a failure (a panic in the supervisor's own task would lose the plugin for good). Every
//! task is spawned on its group's [`TaskTracker`] (inputs or outputs), so that shutdown can wait
//! for all of them, and a plugin's own tasks ([`AdapterContext::spawn`]) are cancelled and
//! awaited when that run ends.

use std::time::Duration;

use atm_core::control::ControlBus;
use atm_core::ingest::IngestHub;
use atm_core::plugin::{
    AdapterContext, PluginEnv, PluginError, PluginFactory, PluginRegistration, SinkContext,
};
use atm_core::registry::RegistryHandle;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{debug, error, info, warn};

use crate::config::PluginEntry;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a failed run's own tasks (an adapter's connections) get to stop.
const RUN_TASKS_STOP: Duration = Duration::from_secs(1);

/// What every plugin instance shares.
#[derive(Clone)]
pub struct Shared {
    pub registry: RegistryHandle,
    pub ingest: IngestHub,
    pub control: ControlBus,
    pub env: PluginEnv,
}

/// One branch of the cancellation tree: the inputs or the outputs. Cancelling the token stops
/// every plugin of the group; the tracker holds every task the group's plugins run.
#[derive(Debug, Clone, Default)]
pub struct TaskGroup {
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
}

impl TaskGroup {
    /// Cancels the group and waits for every task of it until `deadline`. `false` when some
    /// did not finish in time.
    pub async fn stop(&self, deadline: Instant) -> bool {
        self.cancel.cancel();
        self.wait(deadline).await
    }

    /// Waits, without cancelling, for every task of the group to finish until `deadline`.
    pub async fn wait(&self, deadline: Instant) -> bool {
        self.tasks.close();
        tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// A supervised plugin instance.
pub struct RunningPlugin {
    pub entry: PluginEntry,
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
}

impl RunningPlugin {
    pub fn spawn(entry: PluginEntry, shared: Shared, group: &TaskGroup) -> Self {
        let cancel = group.cancel.child_token();
        let task = group.tasks.spawn(supervise(
            entry.clone(),
            shared,
            cancel.clone(),
            group.tasks.clone(),
        ));
        Self {
            entry,
            cancel,
            task,
        }
    }

    /// Cancels the instance and waits for it until `deadline`, then aborts it.
    pub async fn stop(self, deadline: Instant) {
        self.cancel.cancel();
        let name = self.entry.instance.clone();
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!(plugin = %name, "did not stop in time; aborted");
            task.abort();
        }
    }
}

async fn supervise(
    entry: PluginEntry,
    shared: Shared,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let Some(reg) = entry.registration() else {
        error!(plugin = %entry.instance, "plugin is not compiled in");
        return;
    };
    let name = entry.instance.clone();
    let mut backoff = FIRST_BACKOFF;
    let mut unavailable_logged = false;
    loop {
        let started = Instant::now();
        let result = run_once(reg, &entry, &shared, &cancel, &tasks).await;
        if cancel.is_cancelled() {
            if let Err(e) = result {
                warn!(plugin = %name, error = %e, "plugin reported an error while stopping");
            }
            return;
        }
        if !shared.registry.is_connected() {
            // The registry is gone: the daemon is shutting down; a sink ending now is expected.
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        match &result {
            Err(PluginError::Unavailable(why)) => {
                if !unavailable_logged || reg.optional {
                    info!(plugin = %name, reason = %why, retry_in = ?backoff, "plugin waiting for what it needs");
                }
                unavailable_logged = true;
            }
            Err(e) if reg.optional => {
                warn!(plugin = %name, error = %e, retry_in = ?backoff, "optional plugin failed; restarting")
            }
            Err(e) => {
                error!(plugin = %name, error = %e, retry_in = ?backoff, "plugin failed; restarting")
            }
            Ok(()) => {
                warn!(plugin = %name, retry_in = ?backoff, "plugin stopped on its own; restarting")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Builds one instance and runs it in a task of its own until it ends; a panic is returned as
/// an error. The run gets its own child token, cancelled when it ends, so that the tasks it
/// started stop with it.
async fn run_once(
    reg: &PluginRegistration,
    entry: &PluginEntry,
    shared: &Shared,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), PluginError> {
    let name = &entry.instance;
    let run_cancel = cancel.child_token();
    // Cancels this run's tasks however the run ends, the supervisor being aborted included.
    let _stop_run_tasks = run_cancel.clone().drop_guard();
    match reg.factory {
        PluginFactory::Adapter(factory) => {
            let plugin = factory(&entry.settings)?;
            let ctx = AdapterContext::new(
                name.clone(),
                shared.registry.clone(),
                run_cancel.clone(),
                shared.ingest.clone(),
                shared.control.clone(),
                shared.env.clone(),
            );
            let ready = ctx.readiness();
            let run_tasks = ctx.tasks().clone();
            let mut run = AbortOnDropHandle::new(tasks.spawn(plugin.run(ctx)));
            let result = tokio::select! {
                biased;
                joined = &mut run => joined,
                () = ready.wait() => {
                    debug!(plugin = %name, "adapter serving");
                    (&mut run).await
                }
            };
            run_cancel.cancel();
            run_tasks.close();
            if tokio::time::timeout(RUN_TASKS_STOP, run_tasks.wait())
                .await
                .is_err()
            {
                warn!(plugin = %name, "tasks of the adapter did not stop in time");
            }
            outcome(result)
        }
        PluginFactory::Sink(factory) => {
            let plugin = factory(&entry.settings)?;
            let ctx = SinkContext {
                name: name.clone(),
                registry: shared.registry.clone(),
                cancel: run_cancel.clone(),
                control: shared.control.clone(),
                env: shared.env.clone(),
            };
            let run = AbortOnDropHandle::new(tasks.spawn(plugin.run(ctx)));
            outcome(run.await)
        }
    }
}

/// A run's result, a panic counting as a failure.
fn outcome(joined: Result<Result<(), PluginError>, JoinError>) -> Result<(), PluginError> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(PluginError::Other(format!(
            "panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(_) => Err(PluginError::Other("its task was aborted".to_owned())),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}
