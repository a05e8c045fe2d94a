"""Training loops timed in lockstep: threads that take turns, one step each, so that load from other
jobs on the machine falls on every loop alike (the speed benchmarks of training steps use it)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def batch_loader(batches: list[dict]):
    """A DataLoader that yields the stored batches as they are, in order."""
    from torch.utils.data import DataLoader

    return DataLoader(batches, batch_size=None, shuffle=False)


class Lockstep:
    """Runs several training loops in threads that take turns, one step each, round robin.

    A loop calls :meth:`begin` when it is ready to start its next timed stretch (it waits for
    its turn), and :meth:`end` when that stretch is over (its duration is recorded and the
    next loop gets the turn). So step i of loop A runs right next to step i of loop B, and
    load from other jobs on the machine falls on both alike. Only one loop runs at a time.

    The threads share torch's global random generator, so each stretch starts by seeding it
    with ``seed`` + the stretch's number (untimed): stretch k of every loop draws the same
    dropout masks, whatever the other loops drew in between.
    """

    def __init__(self, names: Sequence[str], first: str, seed: int = 0) -> None:
        self.names = list(names)
        self.seed = seed
        self._stretches = {name: 0 for name in names}
        self.current = self.names.index(first)
        self.done: set[str] = set()
        self.durations: dict[str, list[float]] = {name: [] for name in names}
        self.cpu_durations: dict[str, list[float]] = {name: [] for name in names}
        self._cond = threading.Condition()
        self._started: dict[str, tuple[float, float]] = {}

    def _advance(self) -> None:
        for _ in self.names:
            self.current = (self.current + 1) % len(self.names)
            if self.names[self.current] not in self.done:
                break
        self._cond.notify_all()

    def begin(self, name: str) -> None:
        import torch

        with self._cond:
            self._cond.wait_for(lambda: self.names[self.current] == name)
        torch.manual_seed(self.seed + self._stretches[name])
        self._stretches[name] += 1
        self._started[name] = (time.perf_counter(), time.thread_time())

    def end(self, name: str) -> None:
        wall, cpu = self._started.pop(name)
        self.durations[name].append(time.perf_counter() - wall)
        self.cpu_durations[name].append(time.thread_time() - cpu)
        with self._cond:
            self._advance()

    def finish(self, name: str) -> None:
        """``name`` is done (its last, untimed stretch too); the others go on without it."""
        self._started.pop(name, None)
        with self._cond:
            self.done.add(name)
            if self.names[self.current] == name:
                self._advance()

    def run(self, loops: dict[str, Callable[[Lockstep, str], Any]]) -> dict[str, Any]:
        """Run every loop in its own thread until all are done; return their results."""
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def target(name: str) -> None:
            try:
                results[name] = loops[name](self, name)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller
                errors.append(err)
            finally:
                self.finish(name)

        threads = [threading.Thread(target=target, args=(name,), name=f"bench-{name}") for name in self.names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


def trainer_loop(
    template_module, batches: list[dict], precision: str = "32-true", callbacks: Sequence = (), accelerator: str = "cpu"
):
    """A lockstep loop: ``Trainer.fit`` of a copy of ``template_module`` over ``batches``.

    Timed stretches: [start-up: ``Trainer(...)`` and ``fit`` until the first batch], then each
    step from one ``on_train_batch_start`` to the next (everything the loop does per step:
    hooks, fetching, forward, backward, clipping, optimizer and scheduler step, logging). The
    last step (it also closes the epoch and the fit) is not timed. The Trainer has what is not
    the training loop switched off (validation, checkpointing, logger, progress bar, model
    summary); the module's own recipe stays: ``configure_optimizers`` (AdamW, linear warmup
    and decay per step), ``training_step`` with its ``self.log``, gradient clipping at 1.0.
    """
    import pytorch_lightning as pl

    module = copy.deepcopy(template_module)

    def loop(lock: Lockstep, name: str):
        class Turns(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                lock.end(name)
                lock.begin(name)

        lock.begin(name)
        trainer = pl.Trainer(
            accelerator=accelerator, devices=1, precision=precision, max_epochs=1, max_steps=len(batches),
            gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            callbacks=[Turns(), *callbacks],
        )
        trainer.fit(module, train_dataloaders=batch_loader(batches))
        return module

    return loop


def lockstep_repeats(
    make_loops: Callable[[], dict[str, Callable]], repeats: int, skip: int, warmup: int = 1
) -> dict[str, Any]:
    """``repeats`` lockstep runs of the loops from ``make_loops`` (the first loop to move
    alternates between runs), after ``warmup`` untimed runs.

    Returns per loop and per repeat: steady steps/s (steps ``skip``.. of each run) by the wall
    clock and by the loop thread's CPU time (with one torch thread all of a loop's work runs
    in its own thread, so CPU time leaves out the time other jobs on the machine took the
    core), start-up seconds, step times, and the trained modules of the last run.
    """
    out: dict[str, Any] = {"steps_per_s": {}, "cpu_steps_per_s": {}, "startup_s": {}, "step_s": {}}
    for index in range(warmup + repeats):
        loops = make_loops()
        names = list(loops)
        lock = Lockstep(names, first=names[index % len(names)])
        modules = lock.run(loops)
        if index < warmup:
            continue
        for name in names:
            startup, *steps = lock.durations[name]
            steady = steps[skip:]
            out["steps_per_s"].setdefault(name, []).append(len(steady) / sum(steady))
            cpu_steady = lock.cpu_durations[name][1 + skip:]
            out["cpu_steps_per_s"].setdefault(name, []).append(len(cpu_steady) / sum(cpu_steady))
            out["startup_s"].setdefault(name, []).append(startup)
            out["step_s"].setdefault(name, []).append(steady)
        out["modules"] = modules
    return out
