"""``minidl train``: train AlexNet, a ResNet or airbench94 on CIFAR-10 (or a folder of your own images).

    minidl train --device cuda                  # the "seed" AlexNet, 224x224
    minidl train --variant cifar --device cpu   # minutes on a laptop
    minidl train --model resnet20               # He et al.'s CIFAR ResNet-20 and recipe
    minidl train --model airbench94             # Keller Jordan's fast CIFAR-10 net and recipe
    minidl train --variant cifar --resume       # continue a stopped run
    mpiexec -n 2 minidl train --variant cifar   # data-parallel, 2 processes
    minidl train --dataset folder --data-dir photos/ --variant paper   # photos/<class>/*.jpg
    minidl train --dataset folder --data-dir photos/ --model resnet18 --weights resnet18-f37072fd.pth  # fine-tune

Everything the run produces goes to --out: history.csv, checkpoint.npz, best.npz,
results.json and (with matplotlib) curves.png and filters.png. The settings come
from ``recipes``, the data from ``datasets``; this module starts the processes,
builds the model, optimizer and Trainer, and turns every failure into one line.

Exit codes: 0 done, 1 an error (message on stderr), 2 bad arguments, 3 the loss
became NaN/infinite (the last good checkpoint is kept), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from .. import __version__, backend, distributed
from ..callbacks import FilterPlot, FreezeAfter
from ..checkpoint import CheckpointError, load_checkpoint
from ..data import DatasetError
from ..distributed import DataParallel, DistributedError
from ..distributed.launch import StartupError, agree, device_for, share_cpu_cores
from ..distributed.world import launcher_rank
from .. import functional as F
from ..models.alexnet import CIFAR_WIDTHS
from ..train import NonFiniteLossError, Trainer
from . import datasets
from .common import ArgumentParser, count, error, make_directory
from .model_files import InputError, fit_weights, read_weights
from .models import MODELS, build_model, classifier_name, describe_model, input_size, run_name
from .recipes import (DEFAULT_CHECKPOINT_EVERY, DEFAULT_SEED, DEFAULT_VAL_SIZE, LENGTH_DEPENDENT, OLD_RUN_DEFAULTS,
                      OPTIMIZERS, RECIPES, UsageError, build_optimizer, make_schedule, parameter_groups, recipe_help,
                      resolve_settings, widths)

PROG = "minidl train"
EXIT_ERROR, EXIT_NONFINITE, EXIT_INTERRUPTED = 1, 3, 130


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description="Train AlexNet, a ResNet or airbench94 on CIFAR-10 (or your "
                       "own images) with minidl.", epilog=recipe_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda:0 when a GPU is usable, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--model", choices=MODELS, default=None, help="alexnet (default; --variant picks which), He et "
                   "al.'s CIFAR ResNets resnet20..resnet110 (32x32), torchvision's resnet18, resnet34 (224x224), "
                   "airbench94 (32x32, Jordan's fast CIFAR-10 net)")
    p.add_argument("--variant", choices=sorted(RECIPES), default=None,
                   help="AlexNet: seed (224x224, the tutorial's model; default), paper (227x227), cifar (32x32), "
                        "torchvision (224x224, torchvision's single-stream AlexNet)")
    p.add_argument("--weights", help="start from these weights: a minidl checkpoint (.npz), a .safetensors or a "
                   "PyTorch .pth; a classifier with another number of classes starts fresh (fine-tuning)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (default; --momentum, --nesterov), adam, adamw, "
                   "rmsprop (--momentum)")
    p.add_argument("--label-smoothing", type=count(float, 0.0), help="cross-entropy against targets smoothed by "
                   "this much (PyTorch's label_smoothing; default 0)")
    p.add_argument("--epochs", type=count(int, 1), help="number of epochs (default: per variant)")
    p.add_argument("--batch-size", type=count(int, 1), help="images per step (default: per variant)")
    p.add_argument("--lr", type=count(float, 0.0), help="learning rate; the peak for onecycle (default: per variant)")
    p.add_argument("--momentum", type=count(float, 0.0), help="SGD momentum (default: per variant)")
    p.add_argument("--weight-decay", type=count(float, 0.0), help="L2 weight decay (default: per variant)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum (default: per variant)")
    p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "multistep", "plateau", "linear", "constant"],
                   help="learning-rate schedule (default: per variant)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crops (pad 4; airbench94: translations by up to 2 pixels, the border reflected) "
                        "and horizontal flips while training; for folders random-resized crops and flips "
                        "(default: per variant)")
    p.add_argument("--preprocess", choices=("standardize", "subtract-mean", "channel"),
                   help="CIFAR-10: each image to mean 0, std 1 (the tutorial's), the training images' mean "
                        "image subtracted in pixel units (the paper's), or each channel normalised with the training "
                        "images' mean and std (airbench94's) (default: per variant)")
    p.add_argument("--flip", choices=("random", "alternate"), help="with --augment: mirror a random half of the "
                   "images, or each image in every other epoch (airbench94's) (default: per model)")
    p.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=None,
                   help="every 5 steps pull the weights towards their slow average (airbench94's; default: per "
                        "model)")
    p.add_argument("--tta", type=int, choices=(0, 1, 2), help="test-time augmentation in evaluation: 0 none, 1 the "
                   "mirror image too, 2 also 1-pixel translations (default: per model)")
    p.add_argument("--bias-lr-scale", type=count(float, 1.0), help="airbench94: the batch norms' shifts train at this many "
                   "times the lr, with the weight decay divided by it (default 64; 1: like the other weights)")
    p.add_argument("--whiten-bias-epochs", type=count(int, 0), help="airbench94: epochs the whitening layer's bias "
                   "trains before it is frozen (default 3; --epochs or more: never frozen)")
    p.add_argument("--dirac", action=argparse.BooleanOptionalAction, default=None, help="airbench94: start the "
                   "blocks' convolutions as the identity (default: on)")
    p.add_argument("--whitening", action=argparse.BooleanOptionalAction, default=None, help="airbench94: the first "
                   "layer's frozen filters from the training images' patches (default: on; off: default init, "
                   "trained)")
    p.add_argument("--clip-grad-norm", type=count(float, 0.0), help="scale a step's gradients down when their "
                   "joint L2 norm exceeds this (0: never; default: per variant)")
    p.add_argument("--init", choices=("paper", "he"), help="paper variant only: initialise as the paper "
                   "(N(0, 0.01), biases 1) or He-normal convs and PyTorch-default dense layers (default: he)")
    p.add_argument("--data-dir", help="a directory holding cifar-10-batches-py/, or where to download it "
                                      "(default: ~/.cache/minidl); with --dataset folder, the image folder")
    p.add_argument("--out", help="output directory (default: runs/alexnet_<variant> or runs/<model>)")
    p.add_argument("--seed", type=count(int, 0),
                   help=f"seed of weights, data order, augmentation, dropout (default {DEFAULT_SEED})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    p.add_argument("--val-size", type=count(int, 0), help="first N training images held out for validation "
                                                         f"(default {DEFAULT_VAL_SIZE}; the CIFAR ResNets and "
                                                         "airbench94 0: none)")
    p.add_argument("--limit-train", type=count(int, 1), help="use only the first N training images")
    p.add_argument("--limit-val", type=count(int, 1), help="use only the first N validation images")
    p.add_argument("--limit-test", type=count(int, 1), help="use only the first N test images")
    p.add_argument("--widths", type=widths, help="cifar variant only: 7 even ints, channels of conv1..conv5 and "
                                                 f"units of fc6, fc7 (default {','.join(map(str, CIFAR_WIDTHS))})")
    p.add_argument("--checkpoint-every", type=count(int, 0), default=DEFAULT_CHECKPOINT_EVERY,
                   help="also checkpoint every N steps within an epoch (0: only at epoch ends; default %(default)s)")
    p.add_argument("--tf32", action="store_true", help="allow TensorFloat-32 matrix products on the GPU "
                                                       "(faster, less exact; batch-norm statistics stay float32); "
                                                       "no effect on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, only a line per epoch")
    p.add_argument("--no-plots", action="store_true", help="skip curves.png and filters.png")
    dp = p.add_argument_group("data parallelism (under mpiexec; --batch-size is the global batch)")
    dp.add_argument("--comm", choices=["auto", "mpi", "nccl"], default="auto",
                    help="how GPU arrays are reduced: nccl (auto) or mpi (CUDA-aware or staged through the "
                         "host); CPU arrays always use MPI")
    dp.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True,
                    help="batch-norm statistics over the global batch, so N processes train exactly like "
                         "one (default); --no-sync-bn: per process, as PyTorch DDP does by default")
    dp.add_argument("--bucket-mb", type=count(float, 0.001), default=distributed.DEFAULT_BUCKET_BYTES / 2**20,
                    help="size of the gradient buckets all-reduced during backward (default %(default)g MB)")
    datasets.add_arguments(p)
    return p


def _airbench_knobs(s) -> str:
    """airbench94's shifts' lr scale and whitening-bias epochs, and its initialisations when switched off."""
    if s.get("bias_lr_scale") is None:
        return ""
    off = [name for name in ("dirac", "whitening") if not s.get(name, True)]
    return (f"norm shifts x{s['bias_lr_scale']:g}, whitening bias {s['whiten_bias_epochs']} epochs, "
            + "".join(f"no {name} init, " for name in off))


def describe(settings, device, loaders, model, out, resumed, args, world, weights_note=None) -> str:
    """The run's summary, printed by the main process before the first epoch."""
    s, (train, val, test) = settings, loaders
    size = input_size(s)
    params = sum(int(p.data.size) for p in model.parameters())
    name = describe_model(s)
    optimizer = s["optimizer"] if s["optimizer"] != "sgd" else f"SGD, momentum {s['momentum']}" + \
        (" nesterov" if s["nesterov"] else "")
    lines = [f"minidl {__version__}: {name} ({size}x{size}) on {device}",
             f"  {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']} ({s['schedule']}), {optimizer}, "
             f"weight decay {s['weight_decay']}, "
             f"{'label smoothing ' + str(s['label_smoothing']) + ', ' if s['label_smoothing'] else ''}augment "
             f"{'on' if s['augment'] else 'off'}{', ' + s['preprocess'] if s['dataset'] == 'cifar10' else ''}"
             f"{', gradient norm clipped at ' + str(s['clip_grad_norm']) if s['clip_grad_norm'] else ''}, "
             f"{s['init'] + ' init, ' if s['init'] else ''}"
             f"{'alternating flips, ' if s['augment'] and s.get('flip') == 'alternate' else ''}"
             f"{'lookahead, ' if s.get('lookahead') else ''}{'tta ' + str(s['tta']) + ', ' if s.get('tta') else ''}"
             f"{_airbench_knobs(s)}seed {s['seed']}",
             f"  data: {train.num_samples} train / {val.num_samples if val else 0} validation / "
             f"{test.num_samples} test images, "
             f"{len(train)} steps per epoch", *datasets.describe(s, test),
             f"  model: {params:,} parameters; output: {out}"]
    if s.get("weights"):
        lines.append(f"  weights: {'started' if resumed is not None else 'starting'} from {s['weights']}"
                     + (f"; {weights_note}" if weights_note else ""))
    if world.size > 1:
        comm = "mpi" if device.type == "cpu" else world.gpu_comm   # "auto" is settled by device_for
        lines.append(f"  data parallel: {world.size} processes ({world.local_size} on this host), {comm}, "
                     f"{s['batch_size'] // world.size} images each per step, "
                     f"batch norm {'synchronised' if args.sync_bn else 'per process'}, buckets of "
                     f"{args.bucket_mb:g} MB" + (f", {args.threads} CPU threads each" if device.type == "cpu" else ""))
    if resumed is not None:
        lines.append(f"  resuming at epoch {resumed['epoch'] + 1}, batch {resumed['step']} "
                     f"({resumed['global_step']} steps done)")
    return "\n".join(lines)


def read_checkpoint(args, out: Path):
    """The checkpoint to resume from (None for a new run); refuses to overwrite a run."""
    if not args.resume:
        if (out / "checkpoint.npz").exists():
            raise UsageError(f"{out} already holds a run (checkpoint.npz); continue it with --resume or choose "
                             "another --out")
        make_directory(out)  # now, not after the data has loaded: a bad --out costs nothing
        return None
    path = out / "checkpoint.npz"
    if not path.exists():
        raise UsageError(f"--resume: there is no checkpoint at {path}; start the run without --resume")
    checkpoint = load_checkpoint(path)
    missing = [key for key in ("model", "optim", "rngs", "trainer", "settings") if key not in checkpoint]
    if missing:
        raise UsageError(f"--resume: {path} is not the checkpoint of a training run (it has no "
                         f"{', '.join(missing)}); start a new run in another --out")
    return checkpoint


def _out(args) -> Path:
    return Path(args.out or f"runs/{run_name({'model': args.model, 'variant': args.variant})}")


def start_world(args):
    """This process's world, device and (rank 0's) checkpoint, agreed by every process."""
    world = distributed.init(gpu_comm=args.comm)
    device = checkpoint = error_text = None
    try:
        device = device_for(args.device, world)
        if args.comm == "nccl" and device.type == "cpu":
            raise UsageError("--comm nccl reduces GPU arrays; it needs --device cuda")
        args.threads = share_cpu_cores(world)
        if world.is_main:  # the run's files live with rank 0; the others get them from it
            checkpoint = read_checkpoint(args, _out(args))
    except (UsageError, CheckpointError, backend.DeviceError, DistributedError, ValueError) as exc:
        error_text = str(exc)
    agree(world, error_text)
    return world, device, world.bcast_object(checkpoint)


def start_from_weights(model, settings, world):
    """Load the run's --weights into the fresh ``model`` (every process; a failure stops all of them).

    Returns:
        None, or the line saying that the classifier starts fresh (another number of classes).
    """
    note = error_text = source = None
    if settings.get("weights"):
        try:
            state, source = read_weights(settings["weights"])
            note = fit_weights(model, state, classifier_name(settings), settings["weights"], describe_model(settings),
                               replace_classifier=True)
        except InputError as exc:
            error_text = str(exc)
            if source is not None and describe_model(source) != describe_model(settings):
                error_text += f" (the file is a run of {describe_model(source)})"
    agree(world, error_text)
    return note


def run(args) -> int:
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # CuPy reads it before its first float32 matrix product
    world, device, checkpoint = start_world(args)
    out = _out(args)
    stored = None
    if checkpoint is not None:
        stored = dict(OLD_RUN_DEFAULTS, **checkpoint["settings"], completed_epochs=checkpoint["trainer"]["epoch"])
    try:
        settings = resolve_settings(args, stored)
        if settings["batch_size"] % world.size:
            raise UsageError(f"--batch-size {settings['batch_size']} is the global batch, split evenly over the "
                             f"{world.size} processes: it must be a multiple of {world.size}")
        error_text = None
    except UsageError as exc:
        settings, error_text = None, str(exc)
    agree(world, error_text)
    settings.pop("completed_epochs", None)
    args.resolved_batch_size = settings["batch_size"]  # for the out-of-memory hint
    data = datasets.load(args, settings, world)
    settings.setdefault("class_names", getattr(data, "label_names", None))  # for minidl predict
    agree(world, None, {**settings, "data": datasets.fingerprint(data), "sync_bn": args.sync_bn, "comm": args.comm,
                        "bucket_mb": args.bucket_mb})
    parallel_run = world.size > 1
    with backend.device_context(device):  # the run's GPU is current for everything below
        loaders = datasets.make_loaders(settings, data, device, shard=(world.rank, world.size) if parallel_run
                                        else None, workers=args.workers, on_bad_image=args.on_bad_image)
        train, val, test = loaders
        model = build_model(settings, len(settings["class_names"]))
        # airbench94's whitening layer from the training images (unless --no-whitening, an ablation)
        if checkpoint is None and hasattr(model, "init_whitening") and settings.get("whitening", True):
            model.init_whitening(datasets.whitening_images(settings, data))
        weights_note = start_from_weights(model, settings, world) if checkpoint is None else None
        model = model.to(device)
        parallel = DataParallel(model, world, sync_bn=args.sync_bn, bucket_bytes=int(args.bucket_mb * 2**20)) \
            if parallel_run else None
        optimizer = build_optimizer(settings, parameter_groups(settings, model), settings["epochs"] * len(train),
                                    model)
        initial_lrs = [group["lr"] for group in optimizer.param_groups]
        schedule = make_schedule(settings, optimizer, len(train))
        smoothing = settings["label_smoothing"]
        loss_fn = (lambda logits, labels: F.cross_entropy(logits, labels, label_smoothing=smoothing)) \
            if smoothing else None
        callbacks = [] if args.no_plots or settings["model"] != "alexnet" else [FilterPlot()]
        if settings.get("whiten_bias_epochs") is not None:   # airbench94's whitening bias trains only so long
            callbacks.append(FreezeAfter([model.whiten.bias], settings["whiten_bias_epochs"]))
        trainer = Trainer(model, optimizer, train, val, epochs=settings["epochs"], schedule=schedule, out_dir=out,
                          loss_fn=loss_fn,
                          settings=settings, checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                          plots=not args.no_plots, callbacks=callbacks, parallel=parallel, tta=settings.get("tta", 0))
        if checkpoint is not None:
            def rebuild(opt):
                for group, lr in zip(opt.param_groups, initial_lrs):
                    group["lr"] = lr  # the fresh schedule starts from the base rates, then is replayed
                return make_schedule(settings, opt, len(train))
            longer = settings["epochs"] != checkpoint["settings"]["epochs"] and settings["schedule"] in LENGTH_DEPENDENT
            trainer.load_state_dict(checkpoint, rebuild_schedule=rebuild if longer else None)
        if world.is_main:
            print(describe(settings, device, loaders, model, out, trainer.state if checkpoint is not None else None,
                           args, world, weights_note), flush=True)
        # A diverging run is stopped by the trainer with one clear message (exit code 3);
        # NumPy's per-operation overflow warnings on the way there would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            trainer.fit()
            results = trainer.test(test)
    if world.is_main:
        best = "no validation set" if results["best_val_acc"] is None else \
            f"best validation accuracy {100 * results['best_val_acc']:.2f}% at epoch {results['best_epoch']}"
        print(f"test: loss {results['test_loss']:.4f}, accuracy {100 * results['test_acc']:.2f}%, top-5 "
              f"{100 * results['test_top5']:.2f}% (final weights; {best}); files in {out}", flush=True)
    return 0


def main(argv=None, prog: str = PROG) -> int:
    """Run ``minidl train`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    args = build_parser(prog).parse_args(argv)  # bad arguments: usage + message, exit 2

    def fail(message: str, code: int = EXIT_ERROR, everywhere: bool = True) -> int:
        """One line on stderr, then exit ``code``.

        ``everywhere``: every process met this failure at the same point, so rank 0
        reports it and each process simply exits. Otherwise this process failed on
        its own: it reports (naming its rank) and ends the whole run, so that no
        other process waits for it forever.
        """
        world = distributed.initialized()
        rank = world.rank if world is not None else launcher_rank()
        if rank == 0 or not everywhere:
            error(prog, (f"rank {rank}: " if rank != 0 and not everywhere else "") + message)
        if world is not None and world.size > 1 and not everywhere:
            if rank != 0 and code == EXIT_INTERRUPTED:
                time.sleep(1.0)  # Ctrl-C reaches every process: let rank 0 say so and end the run
            world.abort(code)
        return code

    try:
        return run(args)
    except NonFiniteLossError as exc:  # the loss is summed over all processes: all stop at this step
        return fail(str(exc), EXIT_NONFINITE)
    except StartupError as exc:  # agreed by every process
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted; continue with the same command plus --resume", EXIT_INTERRUPTED, everywhere=False)
    except DistributedError as exc:  # before MPI started (e.g. no mpi4py), every process fails alike
        return fail(str(exc), everywhere=distributed.initialized() is None)
    except (UsageError, DatasetError, backend.DeviceError, CheckpointError) as exc:
        return fail(str(exc), everywhere=False)
    except Exception as exc:  # one clear line instead of a traceback
        if backend.is_out_of_memory(exc):
            return fail(f"out of memory with batch size {getattr(args, 'resolved_batch_size', '?')}; "
                        "try a smaller --batch-size", everywhere=False)
        if os.environ.get("MINIDL_TRACEBACK"):
            raise
        return fail(f"{type(exc).__name__}: {exc} (set MINIDL_TRACEBACK=1 to see the traceback)", everywhere=False)
