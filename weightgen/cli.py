"""The command line: Click only. Each command parses, calls one library function, prints.

One command per initializer is generated from the registry (initializers.REGISTRY); aliases
and underscore spellings resolve to it. Errors become one line on stderr and an exit code in
one place, ``main``. Nothing here imports JAX: ``--help``, ``list`` and ``inspect`` stay fast.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any

import click

from .atomic import human_bytes
from .dtypes import DTYPE_NAMES
from .errors import Terminated, WeightgenError
from .hf import FAMILIES, RECIPES
from .initializers import REGISTRY, Initializer, Param, all_names, format_shape, lookup
from .manifest import FOLDER_MANIFEST
from .quant import FORMATS as QUANT_FORMATS
from .quant import names as quant_names
from .version import __version__

EPILOG_FORMATS = "Formats: .safetensors, .npz, .h5/.hdf5 (from the suffix, or --format)."


class WeightgenGroup(click.Group):
    """Resolves aliases and underscore spellings; suggests the nearest name for a typo."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        try:
            return super().get_command(ctx, lookup(cmd_name).name)
        except WeightgenError:
            return None

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if self.get_command(ctx, name) is None and not name.startswith("-"):
            known = [*self.commands, *all_names()]
            close = difflib.get_close_matches(name.lower().replace("_", "-"), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise click.UsageError(
                f"unknown initializer or command {name!r}; {hint}'weightgen list' shows "
                "every initializer",
                ctx,
            )
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        inits = [(n, c) for n, c in self.commands.items() if n in REGISTRY]
        others = [(n, c) for n, c in self.commands.items() if n not in REGISTRY]
        for title, rows in (("Initializers", inits), ("Commands", others)):
            with formatter.section(title):
                formatter.write_dl([(n, c.get_short_help_str(70)) for n, c in rows])


@click.group(
    cls=WeightgenGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example:\n\n\b\n  weightgen he-normal --shape 3,3,64,128 -o k.safetensors\n"
    "  weightgen inspect k.safetensors\n"
    "  weightgen run model.json -o model.safetensors\n"
    "  weightgen verify model.safetensors.manifest.json model.safetensors\n"
    "  weightgen list",
)
@click.version_option(__version__, prog_name="weightgen")
def cli() -> None:
    """Write weight files made by jax.nn.initializers: byte-identical to JAX, streamed in
    bounded memory, to safetensors, npz or HDF5."""


# --- initializer commands -----------------------------------------------------------------


def _param_option(param: Param) -> click.Option:
    help_text = param.help
    if param.kind == "choice":
        help_text += f" [{'|'.join(param.choices)}]"
    if param.required:
        help_text += " [required]"
    else:
        help_text += f" [default: {param.format(param.default)}]"
    # Values stay strings here; the library validates them (one source of truth).
    return click.Option([param.flag, param.name], default=None, help=help_text)


def _tensor_options() -> list[click.Option]:
    """What a single-tensor command needs beyond the initializer's own parameters."""
    return [
        click.Option(["--shape"], required=True, help="comma-separated sizes, e.g. 3,3,64,128"),
        click.Option(["--dtype"], default="float32", show_default=True, help="|".join(DTYPE_NAMES)),
        click.Option(
            ["--sample-dtype"],
            default=None,
            help="dtype to draw in before rounding to --dtype [default: --dtype, except "
            "float32 for float8 and for half-precision orthogonal]",
        ),
        click.Option(
            ["--seed"],
            type=int,
            default=0,
            show_default=True,
            help="key = jax.random.key(seed), 0 to 2**32-1",
        ),
        click.Option(
            ["--name"], default="weight", show_default=True, help="the tensor's name in the file"
        ),
    ]


def _output_options(*, folder: bool = False) -> list[click.Option]:
    """Where and how the output is written, and how the engine runs: shared by every
    writer. ``folder``: the output is always a model folder (no --format, no stdout)."""
    if folder:
        where = [click.Option(["-o", "--output"], default=None, help="the model folder to write")]
    else:
        where = [
            click.Option(["-o", "--output"], required=True, help="file to write, or - for stdout"),
            click.Option(
                ["--format", "fmt"],
                type=click.Choice(["safetensors", "npz", "hdf5"]),
                default=None,
                help="output format [default: from the suffix]",
            ),
        ]
    return [
        *where,
        click.Option(["--force"], is_flag=True, help="replace an existing output (and manifest)"),
        click.Option(
            ["--devices"],
            default=None,
            help="cpu, gpu, tpu, all, or e.g. gpu:0,1 [default: JAX's default backend]",
        ),
        click.Option(
            ["--chunk-size"],
            type=int,
            default=None,
            help="elements per kernel call (never changes the bytes)",
        ),
        click.Option(
            ["--no-compile-cache"],
            is_flag=True,
            help="do not use JAX's persistent compilation cache",
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="no progress bar, hints or summary"),
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            help="print a JSON summary (paths, tensors, bytes, BLAKE3 digests, seconds) on stdout",
        ),
        click.Option(
            ["--file-sha256"],
            is_flag=True,
            help="also record each file's plain sha256 (as sha256sum shows) in the manifest "
            "and --json summary; costs one more read of the output",
        ),
        *_cluster_options(),
    ]


def _cluster_options() -> list[click.Option]:
    """Many hosts: this process is one of a job that writes the output together."""
    return [
        click.Option(
            ["--coordinator-address"],
            envvar="WEIGHTGEN_COORDINATOR_ADDRESS",
            default=None,
            help="HOST:PORT of process 0, where the job's coordination service runs "
            "(jax.distributed); with --num-processes and --process-id",
        ),
        click.Option(
            ["--num-processes"],
            envvar="WEIGHTGEN_NUM_PROCESSES",
            type=int,
            default=None,
            help="how many processes write the output together",
        ),
        click.Option(
            ["--process-id"],
            envvar="WEIGHTGEN_PROCESS_ID",
            type=int,
            default=None,
            help="this process's id, 0 to --num-processes - 1",
        ),
        click.Option(
            ["--cluster"],
            type=click.Choice(["auto"]),
            default=None,
            help="auto: find the three above as JAX does (SLURM, Open MPI, Kubernetes, TPU)",
        ),
        click.Option(
            ["--distributed-timeout"],
            type=float,
            default=60.0,
            show_default=True,
            help="seconds allowed for start-up and for a silent peer before the job stops",
        ),
    ]


def _init_help(entry: Initializer) -> str:
    call = f"jax.nn.initializers.{entry.jax_name}"
    call += "(...)(key, shape, dtype)" if entry.jax_builder else "(key, shape, dtype)"
    names = ", ".join(entry.aliases)
    shape = "3,3,64,64" if entry.family == "delta_orthogonal" else "256,512"
    required = [
        f"{p.flag} {p.choices[0] if p.choices else 1.0}" for p in entry.params if p.required
    ]
    base = " ".join(["weightgen", entry.name, "--shape", shape, *required])
    lines = [
        f"{entry.summary[0].upper()}{entry.summary[1:]}.",
        "",
        f"Bytes equal {call} with key = jax.random.key(--seed)."
        + (f" Aliases: {names}." if names else ""),
        "",
        "Example:",
        "",
        "\b",
        f"  {base} -o w.safetensors",
        f"  {base} --dtype bfloat16 --sample-dtype float32 -o w.npz",
        f"  {base} --manifest w.manifest.json -o w.h5",
    ]
    return "\n".join(lines)


def _make_init_command(entry: Initializer) -> click.Command:
    def callback(**kwargs: Any) -> None:
        _generate(entry, kwargs)

    manifest = click.Option(
        ["--manifest"], default=None, help="also write a manifest (how it was made, its digests)"
    )
    params = [_param_option(p) for p in entry.params] + _tensor_options() + _output_options()
    return click.Command(
        entry.name,
        callback=callback,
        params=[*params, manifest],
        help=_init_help(entry),
        short_help=entry.summary,
        epilog=EPILOG_FORMATS,
    )


def _write_options(options: dict[str, Any], bar) -> dict[str, Any]:
    """The library's write() options from the shared CLI options."""
    if options["as_json"] and options["output"] == "-":
        raise click.UsageError("--json cannot be combined with -o - (stdout carries the file)")
    from .coordination import cluster_of

    return {
        "cluster": cluster_of(
            options["coordinator_address"],
            options["num_processes"],
            options["process_id"],
            options["cluster"],
            options["distributed_timeout"],
        ),
        "format": options.get("fmt"),
        "force": options["force"],
        "devices": options["devices"],
        "chunk_size": options["chunk_size"],
        "compile_cache": not options["no_compile_cache"],
        "hashes": options["as_json"],
        "file_sha256": options["file_sha256"],
        "on_bytes": bar.update if bar is not None else None,
    }


def _generate(entry: Initializer, options: dict[str, Any]) -> None:
    from . import api
    from .plan import make_tensor

    init_params = {p.name: options.pop(p.name) for p in entry.params}
    spec = make_tensor(
        entry,
        options["shape"],
        params={k: v for k, v in init_params.items() if v is not None},
        dtype=options["dtype"],
        sample_dtype=options["sample_dtype"],
        seed=options["seed"],
        name=options["name"],
    )
    quiet = options["quiet"]
    hint = api.half_precision_hint(spec)
    if hint and not quiet and not options["process_id"]:  # hints from process 0 only
        click.echo(hint, err=True)
    with _progress(spec.nbytes, quiet) as bar:
        result = api.write(
            api.Plan.of([spec]),
            options["output"],
            manifest=options["manifest"],
            root_seed=spec.seed,
            **_write_options(options, bar),
        )
    _report(result, quiet=quiet, as_json=options["as_json"])


class _progress:
    """A tqdm bar on stderr for runs that last, only when stderr is a terminal."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.bar = total, quiet, None

    def __enter__(self):
        if self.quiet or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            delay=0.5,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _kind(fmt: str) -> str:
    return "checkpoint folder" if fmt == "safetensors-sharded" else fmt


def _report(result, *, quiet: bool, as_json: bool) -> None:
    if result.process:  # one of several processes: its share only, and only when asked
        if as_json:
            summary = {
                "process": result.process,
                "path": result.path,
                "bytes": result.nbytes,
                "seconds": round(result.seconds, 4),
            }
            click.echo(json.dumps(summary, indent=2))
        return
    if as_json:
        summary = {
            "path": result.path,
            "format": result.format,
            "bytes": result.nbytes,
            "seconds": round(result.seconds, 4),
            "manifest": result.manifest,
            "files": result.files,
            "tensors": [
                {"name": t.name, "bytes": t.nbytes, "digest": t.digest} for t in result.tensors
            ],
        }
        if result.processes:
            summary["processes"] = result.processes
        click.echo(json.dumps(summary, indent=2))
    if not quiet:
        for note in result.notes:
            click.echo(note, err=True)
        where = "stdout" if result.path == "-" else result.path
        count = len(result.tensors)
        manifest = f"; manifest {result.manifest}" if result.manifest else ""
        if result.processes:
            manifest += f"; {len(result.processes)} processes"
        size = f"{human_bytes(result.nbytes)} ({_kind(result.format)})"
        click.echo(
            f"wrote {where}: {count} tensor{'s' if count != 1 else ''}, {size} in "
            f"{result.seconds:.2f} s{manifest}",
            err=True,
        )


for _entry in REGISTRY.values():
    cli.add_command(_make_init_command(_entry))


# --- run, verify ---------------------------------------------------------------------------


def _write_spec(
    parsed, options: dict[str, Any], announce: str | None = None, source: str | None = None
) -> None:
    """What run and hf share: the manifest flags, the checks, the progress bar, the write,
    the report. ``announce`` (what is about to be written) is said once every check that
    can refuse the run has passed."""
    from . import api
    from .formats.sharded import parse_size

    if options["manifest"] is not None and options["no_manifest"]:
        raise click.UsageError("--manifest and --no-manifest contradict each other")
    manifest = options["manifest"]
    if manifest is None and not options["no_manifest"] and options["output"] != "-":
        manifest = True  # beside a file, inside a folder
    shard = options["max_shard_size"]
    max_shard_size = parse_size(shard) if shard is not None else None
    quiet = options["quiet"]
    config_check = not options["no_config_check"]
    if config_check:
        api.check_config(parsed, None if source in (None, "-") else source)
    shared = any(
        options[k] is not None
        for k in ("coordinator_address", "num_processes", "process_id", "cluster")
    )
    if announce is not None and not quiet and not options["process_id"]:
        if not shared:  # a shared run checks the destination together (api.write)
            api.check_output(
                parsed,
                options["output"],
                format=options.get("fmt"),
                force=options["force"],
                max_shard_size=max_shard_size,
                manifest=manifest,
            )
        click.echo(announce, err=True)
    with _progress(parsed.plan.nbytes, quiet) as bar:
        result = api.write_parsed(
            parsed,
            options["output"],
            config_check=False,  # checked above
            accept_qr_drift=options.get("accept_qr_drift", False),
            manifest=manifest,
            max_shard_size=max_shard_size,
            **_write_options(options, bar),
        )
    _report(result, quiet=quiet, as_json=options["as_json"])


def _run_callback(spec: str, **options: Any) -> None:
    from . import api
    from .specfile import load_spec

    parsed = load_spec(spec)
    quiet = options["quiet"]
    hinted = [t.name for t in parsed.plan.tensors if api.half_precision_hint(t)]
    if hinted and not quiet and not options["process_id"]:  # hints from process 0 only
        more = f" and {len(hinted) - 3} more" if len(hinted) > 3 else ""
        click.echo(
            f"hint: {', '.join(hinted[:3])}{more} draw half-precision values in their own "
            'dtype, as JAX does; set sample_dtype = "float32" to draw in float32 and round',
            err=True,
        )
    _write_spec(parsed, options, source=spec)


run_command = click.Command(
    "run",
    callback=_run_callback,
    params=[
        click.Argument(["spec"]),
        *_output_options(),
        click.Option(
            ["--manifest"],
            default=None,
            help="where to write the manifest [default: OUTPUT.manifest.json beside a "
            "file, OUTPUT/weightgen.manifest.json inside a folder; none for stdout]",
        ),
        click.Option(["--no-manifest"], is_flag=True, help="do not write a manifest"),
        click.Option(
            ["--no-config-check"],
            is_flag=True,
            help="write a spec's tensors even where they are not what its hf_config gives "
            "(names, shapes, dtypes)",
        ),
        click.Option(
            ["--max-shard-size"],
            default=None,
            help="write a sharded safetensors folder, shards up to this size "
            "(e.g. 5GB, 500MB, 2GiB)",
        ),
        click.Option(
            ["--accept-qr-drift"],
            is_flag=True,
            help="replaying a manifest: accept orthogonal/delta-orthogonal tensors whose bytes "
            "differ because this host's BLAS kernel differs, once checked against the "
            "recorded values (regenerated under the recorded kernel) within rounding",
        ),
    ],
    short_help="Write every tensor of a spec or manifest file.",
    help="""Write every tensor of a spec (JSON or TOML) or manifest into one file.

SPEC is a path, or - for stdin. A manifest is written beside a file (OUTPUT.manifest.json)
or inside a folder (OUTPUT/weightgen.manifest.json) unless --no-manifest. A spec with an
hf_config writes a model folder, and its tensors must be what that config gives (names,
shapes, dtypes) unless --no-config-check. Given a manifest, run regenerates the same bytes
and checks every tensor's BLAKE3 block digests as it goes (a format 1 manifest: its
sha256): the first that differs stops it, and nothing is left at OUTPUT. QR tensors
(orthogonal, delta-orthogonal) also depend on the host's BLAS kernel: when only they
differ, the run says so and --accept-qr-drift checks them against the recorded values and
accepts them.

Example:

\b
  weightgen run model.json -o model.safetensors
  weightgen run model.safetensors.manifest.json -o again.safetensors
  weightgen run model.toml -o ckpt/ --max-shard-size 5GB
  weightgen run edited.json -o llama/ --no-config-check
  cat model.json | weightgen run - -o - --format safetensors --no-manifest | other-tool""",
    epilog=EPILOG_FORMATS,
)
cli.add_command(run_command)


def _hf_callback(config: str, **options: Any) -> None:
    from . import api, hf
    from .manifest import dumps
    from .specfile import parse_spec

    document, where = hf.read_config(config)
    spec = api.model_spec(
        document,
        head=options["head"],
        dtype=options["dtype"],
        sample_dtype=options["sample_dtype"],
        seed=options["seed"],
        init=options["init"],
        init_std=options["init_std"],
        rules=options["rule"],
        from_transformers=options["from_transformers"],
        mup_base_width=options["mup_base_width"],
        strict=options["strict"],
        where=where,
        quantize=options["quantize"],
    )
    if not options["quiet"] and not options["process_id"]:
        if options["from_transformers"]:
            from .hf.from_transformers import layout_source

            click.echo(f"layout and init read from {layout_source(spec)}", err=True)
        quantized = options["quantize"] is not None
        from_transformers = options["from_transformers"]
        notes = hf.config_notes(
            document, where, quantized=quantized, from_transformers=from_transformers
        )
        for note in notes:
            click.echo(note, err=True)
    if options["spec"]:
        if options["output"] is not None:
            raise click.UsageError("--spec prints the spec instead of writing; drop -o")
        click.echo(dumps(spec).decode("utf-8"), nl=False)
        return
    if options["output"] is None:
        raise click.UsageError("-o DIR is required (or --spec to print the spec)")
    parsed = parse_spec(spec)
    count = len(parsed.plan.tensors)
    params = sum(t.numel for t in parsed.plan.tensors)
    announce = (
        f"{spec['hf_config']['architectures'][0]}: {count} tensors, "
        f"{params / 1e6:,.1f} M parameters, {human_bytes(parsed.plan.nbytes)} {spec['dtype']}"
    )
    _write_spec(parsed, {**options, "no_config_check": True}, announce)


QUANTIZE_CHOICES = quant_names()

hf_command = click.Command(
    "hf",
    callback=_hf_callback,
    params=[
        click.Argument(["config"]),
        *_output_options(folder=True),
        click.Option(
            ["--dtype"],
            default=None,
            help="float32|bfloat16|float16|float64 [default: the config's dtype, else float32]",
        ),
        click.Option(
            ["--sample-dtype"],
            default=None,
            help="dtype to draw in before rounding [default: float32 for bfloat16/float16]",
        ),
        click.Option(
            ["--seed"], type=int, default=0, show_default=True, help="root seed of the key rule"
        ),
        click.Option(
            ["--head"],
            default=None,
            help="the model class where a family has several (bert: base, mlm, pretraining) "
            "[default: the config's architectures, else the first]",
        ),
        click.Option(
            ["--from-transformers"],
            is_flag=True,
            help="for any model type transformers knows: names, shapes, dtypes and init "
            "read from the model transformers builds on torch's meta device (needs torch "
            "and transformers: pip install torch transformers, or from a clone "
            "'.venv/bin/pip install -e .[transformers]'); only --init hf and "
            "--rule apply",
        ),
        click.Option(
            ["--init", "init"],
            type=click.Choice(list(RECIPES)),
            default="hf",
            show_default=True,
            help="the init recipe: "
            + "; ".join(f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()),
        ),
        click.Option(
            ["--init-std"],
            type=float,
            default=None,
            help="the recipe's base std σ [default: the config's initializer_range for hf, "
            "megatron, olmo2, nanotron; 0.02 for torchtitan; neox, nanotron-spectral, maxtext and "
            "levanter take none]",
        ),
        click.Option(
            ["--mup-base-width"],
            type=int,
            default=None,
            metavar="W",
            help="μP: the base (proxy) model's hidden size W, for a recipe with a μP form ("
            + ", ".join(f"{name}: {recipe.mup}" for name, recipe in RECIPES.items() if recipe.mup)
            + "); the trainer must run with the same base (Megatron: --use-mup "
            "--mup-base-hidden-size W)",
        ),
        click.Option(
            ["--rule", "rule"],
            multiple=True,
            metavar="'GLOB=INIT[,param=value...]'",
            help="set the init of the tensors GLOB matches, after the recipe (repeatable; "
            "later rules win), e.g. '*.o_proj.weight=zeros'. GLOB matches whole tensor names "
            "and * crosses dots. INIT is any initializer with its "
            "parameters as in spec files; fan-based ones (he-normal, lecun-normal, "
            "variance-scaling, ...) use the torch layout [out, in] (fan in = last axis) "
            "unless the rule gives in_axis/out_axis",
        ),
        click.Option(
            ["--quantize", "quantize"],
            type=click.Choice(QUANTIZE_CHOICES),
            default=None,
            help="write the checkpoint as it ships: "
            + "; ".join(f"{name}: {fmt.description}" for name, fmt in QUANT_FORMATS.items())
            + "; published: the format config.json's quantization_config names, kept "
            "as published. Weights are drawn in float32 from their rule, then quantized",
        ),
        click.Option(
            ["--max-shard-size"],
            default="5GB",
            show_default=True,
            help="larger weights are split into model-0000X-of-0000N.safetensors files",
        ),
        click.Option(
            ["--manifest"],
            default=None,
            help="where to write the manifest [default: DIR/weightgen.manifest.json]",
        ),
        click.Option(["--no-manifest"], is_flag=True, help="do not write a manifest"),
        click.Option(
            ["--strict"],
            is_flag=True,
            help="refuse config keys transformers does not know and size fields left to "
            "their class default (without it: a note on stderr for each)",
        ),
        click.Option(
            ["--spec"],
            is_flag=True,
            help="print the model's spec (JSON) on stdout instead of writing; "
            "'weightgen run' writes it",
        ),
    ],
    short_help="Write a Hugging Face model folder from its config.json.",
    help="""Write a Hugging Face model folder from a config.json that transformers loads as is.

CONFIG is a config.json, a folder holding one, or a hub id ORG/NAME[@REVISION]
(config.json alone, from the Hugging Face cache or downloaded through huggingface_hub; an
existing path wins). DIR gets config.json (completed with
every field the shapes came from, and the dtype), model.safetensors (or shards and
model.safetensors.index.json beyond --max-shard-size) and weightgen.manifest.json. Tensors
are named and shaped as save_pretrained writes them and initialised by transformers' own
rules (normal(initializer_range), zero biases, unit norms, the pad row zeroed, ...): the
same distributions as transformers' init, not torch's numbers for a seed. Streamed in
bounded memory, whatever the model's size; no torch or transformers needed.

--init RECIPE initialises the model as a trainer does instead (Megatron-LM, GPT-NeoX,
OLMo 2, torchtitan, nanotron, MaxText, Levanter), so the folder is that trainer's seed
checkpoint; --init-std sets the recipe's base std, --mup-base-width W μP's base width
(megatron) and --rule sets single tensors. The manifest records them all.

Every config key is accounted for: a near-miss of a field the shapes read (num_layers
for num_hidden_layers) is an error naming it; other keys transformers does not know, and
size fields left to the class default, are said on stderr (--strict refuses them). An
architecture weightgen does not build is refused (--head picks one it does).

--from-transformers writes any model type transformers knows (torch and transformers
installed): the tensors, shapes, dtypes and ties of the model transformers builds on the
meta device, each initialised as its own _init_weights does (read from the calls it
makes); a tensor no jax initializer can express needs a --rule.

--quantize FORMAT writes the checkpoint in the format serving engines load (fp8-block,
mxfp4, ct-fp8, ct-w4a16, ct-nvfp4, or published: the config's own quantization_config;
ct-nvfp4's global scale takes a first pass over each weight): each quantized weight is drawn
from its rule in float32 and quantized band by band as the format's quantizer does; the
modules the published checkpoints keep unquantized (embeddings, lm_head, norms, routers)
stay in the model dtype. config.json carries the loader's quantization_config.

Example:

\b
  weightgen hf config.json -o llama/
  weightgen hf Meta-Llama-3-8B/ -o llama8b/ --dtype bfloat16 --seed 7
  weightgen hf llama-3-8b.json -o seed/ --init torchtitan --dtype float32
  weightgen hf config.json -o m/ --init megatron --init-std 0.006
  weightgen hf config.json -o m/ --init megatron --mup-base-width 256
  weightgen hf config.json -o m/ --init nanotron-spectral
  weightgen hf config.json -o m/ --init olmo2 --rule '*.o_proj.weight=zeros'
  weightgen hf Mixtral-8x7B/ -o seed/ --init maxtext --dtype float32
  weightgen hf llama-3-8b.json -o seed/ --init levanter
  weightgen hf bert-config.json -o bert/ --head pretraining
  weightgen hf config.json -o llama/ --strict
  weightgen hf Qwen/Qwen3-8B -o qwen3/ --dtype bfloat16
  weightgen hf EleutherAI/pythia-160m@main -o pythia/ --from-transformers
  weightgen hf facebook/opt-125m -o opt/ --from-transformers --rule '*.fc2.weight=zeros'
  weightgen hf deepseek-v3.json -o dsv3/ --quantize published
  weightgen hf gpt-oss-20b.json -o oss/ --quantize mxfp4 --dtype bfloat16
  weightgen hf llama-3-8b.json -o nv/ --quantize ct-nvfp4 --dtype bfloat16
  weightgen hf config.json --spec > model.json   # edit, then:
  weightgen run model.json -o llama/""",
    epilog="Families: " + ", ".join(FAMILIES),
)
cli.add_command(hf_command)


@cli.command("verify")
@click.argument("paths", nargs=-1, required=True, metavar="[MANIFEST] PATH")
@click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=None,
    help="threads that hash [default: the CPU count, at most 8]",
)
@click.option(
    "--no-config-check",
    is_flag=True,
    help="do not check that a model folder's config.json gives the manifest's tensors",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify_command(
    paths: tuple[str, ...], jobs: int | None, no_config_check: bool, as_json: bool
) -> None:
    """Check PATH against its manifest: exit 0 when everything matches, 1 otherwise.

    PATH is a file (any format), a checkpoint folder or its index file. MANIFEST defaults
    to the one a folder holds (weightgen.manifest.json), or the one beside a file
    (PATH.manifest.json); a manifest given alone checks the output it sits beside (or in).
    Every file is read once, on several threads, never loaded whole. Reports tensors that
    differ (and the first differing block, as a byte range of the tensor's data), are
    missing or extra, change shape or dtype, and any change outside the tensors' data (a
    header, the metadata, config.json field by field); and that a model folder's
    config.json gives the manifest's tensors (names, shapes, dtypes), unless
    --no-config-check.

    Example:

    \b
      weightgen verify model.safetensors
      weightgen verify llama/
      weightgen verify model.safetensors.manifest.json copy.safetensors
    """
    from . import api

    if len(paths) > 2:
        raise click.UsageError("expected PATH, or MANIFEST then PATH")
    manifest, path = (None, paths[0]) if len(paths) == 1 else paths
    if manifest is None and path.endswith(".manifest.json"):  # the manifest alone: its output
        manifest = path
        folder_manifest = os.path.basename(path) == FOLDER_MANIFEST
        path = os.path.dirname(path) or "." if folder_manifest else path[: -len(".manifest.json")]
    manifest = api.find_manifest(manifest, path)
    problems = api.verify(manifest, path, jobs=jobs, config_check=not no_config_check)
    if as_json:
        click.echo(
            json.dumps({"ok": not problems, "problems": [vars(p) for p in problems]}, indent=2)
        )
    elif problems:
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
    else:
        click.echo(f"ok: {path} matches {manifest}", err=True)
    if problems:
        sys.exit(1)


# --- list, inspect -----------------------------------------------------------------------


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_command(as_json: bool) -> None:
    """Every initializer, its aliases, parameters and defaults.

    Example:

    \b
      weightgen list
      weightgen list --json | jq '.[].name'
    """
    rows = [
        {
            "name": e.name,
            "jax": f"jax.nn.initializers.{e.jax_name}",
            "aliases": list(e.aliases),
            "parameters": {
                p.name: ("required" if p.required else p.format(p.default)) for p in e.params
            },
            "fixed": dict(e.fixed),
            "streams": "chunked" if e.elementwise else "whole (QR), then streamed",
            "complex": e.complex_ok,
            "summary": e.summary,
        }
        for e in REGISTRY.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        aliases = f"  (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        click.echo(f"{row['name']}{aliases}")
        click.echo(f"    {row['summary']}")
        params = ", ".join(f"{k}={v}" for k, v in row["parameters"].items()) or "none"
        click.echo(f"    parameters: {params}")


@cli.command("inspect")
@click.argument("path")
@click.option(
    "--manifest",
    default=None,
    help="the manifest whose rules the statistics are checked against [default: the "
    "folder's own, or the one beside the file, if any]",
)
@click.option(
    "--check",
    is_flag=True,
    help="exit 1 when any tensor is off its recorded rule, for scripts (2 when the file "
    "has no manifest to check against); without it, inspect exits 0 whatever it finds",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def inspect_command(path: str, manifest: str | None, check: bool, as_json: bool) -> None:
    """Each tensor's name, shape, dtype, bytes, and mean, std, min, max (one streaming pass).

    Reads safetensors, npz and HDF5 (a file, or a checkpoint folder); restores bfloat16 and
    float8 stored by weightgen. Where a manifest records how each tensor was made (weightgen
    hf and run write one), each tensor's std is shown beside the std its rule implies, and a
    tensor whose mean, std or range is off by more than sampling error is marked with '!':
    a check that the init is what was asked for. A quantized weight (weightgen hf
    --quantize) is also shown dequantized, its statistics beside its rule's, with the
    count of its invalid scales (not finite and positive; E8M0 byte 0xFF). --check makes
    it a gate: exit 1 when any tensor is off or any scale is invalid.

    Example:

    \b
      weightgen inspect k.safetensors
      weightgen inspect llama/
      weightgen inspect llama/ --check && echo "init as recorded"
      weightgen inspect k.safetensors --json
    """
    from .stats import check_findings, inspect_file, inspect_quantized, rules_for

    rules = rules_for(path, manifest)  # the manifest read once, for both tables
    fmt, reports, metadata = inspect_file(path, rules=rules)
    quantized = inspect_quantized(path, rules=rules)
    findings = check_findings(reports, quantized) if check else []
    _inspect_report(path, fmt, reports, quantized, metadata, as_json)
    if findings:
        many = f"{len(findings)} problems; the first" if len(findings) > 1 else "a problem"
        click.echo(f"weightgen: error: --check found {many}: {findings[0]}", err=True)
        sys.exit(1)


def _inspect_report(path: str, fmt: str, reports, quantized, metadata, as_json: bool) -> None:
    if as_json:
        payload = {
            "path": path,
            "format": fmt,
            "metadata": metadata,
            "tensors": [r.as_dict() for r in reports],
        }
        if quantized:
            payload["quantized"] = [q.as_dict() for q in quantized]
        click.echo(json.dumps(payload, indent=2))
        return
    total = sum(r.bytes for r in reports)
    count = len(reports)
    kind = _kind("safetensors-sharded" if fmt == "sharded" else fmt)
    click.echo(f"{path}: {kind}, {count} tensor{'' if count == 1 else 's'}, {human_bytes(total)}")
    checked = [r for r in reports if r.expected is not None]
    header = ("name", "shape", "dtype", "bytes", "mean", "std", "min", "max")
    if checked:
        header += ("rule std", "")
    table = [header]
    for r in reports:
        row = (
            r.name,
            format_shape(r.shape),
            r.dtype,
            str(r.bytes),
            *(_fmt_stat(getattr(r, k)) for k in ("mean", "std", "min", "max")),
        )
        if checked:
            want = r.expected
            rule = "-" if want is None else _fmt_stat(want["std"])
            if want is not None and want["value"] is not None:
                rule = f"={want['value']:g}"
            row += (rule, "!" if r.off else "")
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if checked:
        off = [r for r in checked if r.off]
        for r in off:
            click.echo(f"! {r.name}: {r.off}")
        verdict = f"{len(off)} off" if off else "all within sampling error"
        click.echo(f"{len(checked)} tensors checked against their recorded rules: {verdict}")
    if quantized:
        _show_quantized(quantized)


def _show_quantized(quantized: list) -> None:
    """inspect's table of quantized weights, dequantized."""
    click.echo(f"{len(quantized)} quantized weights, dequantized:")
    header = ("name", "format", "shape", "mean", "std", "rule std", "invalid scales", "")
    table = [header]
    for q in quantized:
        rule = "-" if q.expected is None else _fmt_stat(q.expected["std"])
        table.append(
            (
                q.name,
                q.format,
                format_shape(tuple(q.shape)),
                _fmt_stat(q.mean),
                _fmt_stat(q.std),
                rule,
                str(q.invalid_scales),
                "!" if q.off else "",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    off = [q for q in quantized if q.off]
    for q in off:
        click.echo(f"! {q.name}: {q.off}")
    verdict = f"{len(off)} off" if off else "all within sampling and quantization error"
    click.echo(f"{len(quantized)} quantized weights checked against their rules: {verdict}")


def _fmt_stat(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.6g}"


# --- the one exit path ---------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    click.echo(f"weightgen: error: {message}", err=True)
    from .coordination import ABANDONED

    if ABANDONED.is_set():  # a failed shared run: leave now, without waiting for peers
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every error is one line on stderr and a non-zero exit, never a traceback;
    SIGTERM and SIGHUP too (``weightgen: error: terminated (SIGTERM); ...``, 128 + the
    signal's number), after the run removed what it had started."""
    from .signals import ending_cleanly

    try:
        with ending_cleanly():  # SIGTERM and SIGHUP end a run as Ctrl-C does
            cli.main(args=argv, prog_name="weightgen", standalone_mode=False)
    except Terminated as exc:
        _fail(str(exc), exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare "weightgen"
        click.echo(exc.ctx.get_help(), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "weightgen"
        _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except WeightgenError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", 130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
