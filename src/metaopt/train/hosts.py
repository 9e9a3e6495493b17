"""Starting JAX for a run: how many CPU devices, and which processes form the job.

Both must be settled before JAX computes anything: the CPU device count is fixed when
JAX's CPU backend starts, and :func:`jax.distributed.initialize` must come before any
computation. Nothing here schedules work; JAX's own distributed runtime does.
"""

import jax


def start_jax(
    devices: int | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    distributed: bool = False,
) -> None:
    """Configures JAX for ``devices`` devices and, if asked, joins a multi-process job.

    Args:
      devices: devices the run splits its task batch over, over all processes. On a
        CPU, JAX then presents each process's cores as ``devices / num_processes``
        devices; on GPUs and TPUs, which are counted by the hardware, this changes
        nothing.
      coordinator_address: ``host:port`` of process 0, which every process connects
        to.
      num_processes: how many processes the job has.
      process_id: this process's index, from 0 to ``num_processes - 1``.
      distributed: join a job whose coordinator, process count and index JAX reads
        from the cluster's environment (Slurm, Open MPI, Cloud TPU, ...); implied by
        any of the three arguments above.

    Example:
      >>> start_jax()  # one process, the devices JAX finds
    """
    if devices is not None:
        per_process = -(-devices // (num_processes or 1))
        try:
            jax.config.update("jax_num_cpu_devices", per_process)
        except RuntimeError:
            pass  # JAX has started already; selecting the devices reports too few
    explicit = (coordinator_address, num_processes, process_id)
    if distributed or any(v is not None for v in explicit):
        # Collectives between CPU processes; GPUs and TPUs use their own.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
