"""The rollout phase of the episode loop (:class:`~flowrl.runtime.episodes.EpisodeRunner`).

The spec's rollout runs draw ``generation_batch_size / n`` prompts per batch, each repeated
``n = num_inference_per_prompt`` times in a row (a GRPO group), run them through the rollout
flow and put their samples, tagged with the weight version that generated them, into the
replay buffer. With DAPO's dynamic sampling on, batches are drawn until the kept groups fill
the episode (:mod:`flowrl.runtime.dynamic_sampling`).
"""

from __future__ import annotations

from typing import Any

from rich.progress import Progress

from flowrl.errors import FlowRLError
from flowrl.runtime.batch import Batch
from flowrl.runtime.protocol import FlowResult
from flowrl.runtime.staleness import StalenessError, check_bound, tag_samples


def repeat_samples(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """Every sample of ``batch`` ``n`` times in a row (:meth:`Batch.repeat_interleave`)."""
    return batch if n == 1 else Batch(batch).repeat_interleave(n)


class RolloutMixin:
    """Prompt batches, rollout runs into the buffer and sample tagging; mixed into
    :class:`~flowrl.runtime.episodes.EpisodeRunner`, whose attributes it reads."""

    def _rollout(self, progress: Progress | None) -> list[FlowResult]:
        """The spec's rollout runs (pipelined by a distributed executor) into the buffer."""
        if self.sampler is not None:
            return self._sampled_rollout(progress)
        n_batches = self.spec.rollout_runs
        task = progress.add_task(f"  rollout {self.episode + 1}", total=n_batches) \
            if progress else None
        self.buffer.clear()
        batches = self._prompt_batches()
        results = []
        # run_many lets a distributed executor pipeline the batches across devices.
        for res in self.executor.run_many("rollout", batches, self.episode * n_batches):
            results.append(res)
            if task is not None:
                progress.advance(task)
            if res.skipped is not None:  # on_nonfinite: skip_batch dropped it (counted)
                continue
            self.buffer.samples.extend(self._samples(res, self.episode))
        if task is not None:
            progress.remove_task(task)
        check_bound(self.buffer.samples, self.episode, 0)
        return results

    def _sampled_rollout(self, progress: Progress | None) -> list[FlowResult]:
        """Dynamic sampling: rollout batches until the kept groups fill the episode (or its
        batch limit), into the buffer; each rollout batch's iteration is the count drawn."""
        n = self.args.num_inference_per_prompt
        task = progress.add_task(f"  rollout {self.episode + 1}", total=None) \
            if progress else None

        def draw(count: int, first: int) -> Any:
            batches = [repeat_samples(self.prompts.next(), n) for _ in range(count)]
            for res in self.executor.run_many("rollout", batches, first):
                if task is not None:
                    progress.advance(task)
                yield res

        self.buffer.clear()
        results, kept, self._sampling = self.sampler.collect(
            draw, lambda res: self._samples(res, self.episode))
        if task is not None:
            progress.remove_task(task)
        self.buffer.samples.extend(kept)
        check_bound(self.buffer.samples, self.episode, 0)
        if self._sampling["dynamic_sampling/exhausted"]:
            self.logger.console.print(self.sampler.exhausted_note(self.episode, self._sampling),
                                      highlight=False, soft_wrap=True)
        return results

    def _prompt_batches(self) -> list[dict[str, Any]]:
        """The next episode's prompt batches, each prompt repeated ``num_inference_per_prompt``
        times in a row (the rollout flow always sees ``generation_batch_size`` samples)."""
        n = self.args.num_inference_per_prompt
        return [repeat_samples(self.prompts.next(), n) for _ in range(self.spec.rollout_runs)]

    def _samples(self, res: FlowResult, episode: int, expected: int | None = None
                 ) -> list[dict[str, Any]]:
        """The samples of one rollout result for ``episode``, tagged with their version,
        which must be ``expected`` (default: the spec's
        :meth:`~flowrl.ir.EpisodeSpec.behaviour_version`)."""
        if res.output is None:
            raise FlowRLError("the rollout flow returned nothing: return the outputs that "
                              "form the training samples (e.g. `return reward_out`)")
        if expected is None:
            expected = self.spec.behaviour_version(episode)
        version = res.weight_version if res.weight_version is not None else \
            self.executor.weight_version
        if version != expected:
            raise StalenessError(
                f"the rollout of episode {episode + 1} ran on weight version {version}, not "
                f"{expected} (runtime_args.max_staleness={self.spec.max_staleness}): the "
                f"sync overtook it (a runtime ordering bug; please report it)")
        return tag_samples(Batch(res.output).samples(), version)
