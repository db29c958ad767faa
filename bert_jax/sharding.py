"""Device mesh, logical axis rules, sharded initialization, and the pmap data-parallel mode.

Model code names axes logically (`axes.py`); this table maps them onto the mesh:

  logical     mesh axes          why
  batch       (data, fsdp)       examples split over every data-parallel device
  embed       fsdp               parameters (and optimizer moments) split by FSDP
  mlp         tensor             feed-forward columns split by tensor parallelism
  heads       tensor             attention heads split by tensor parallelism
  vocab       tensor             embedding rows / MLM logits split by tensor parallelism
  kv, length, positions, labels, layers, predictions: replicated

A mesh axis is used at most once per array: an activation [batch, length, embed] takes
(data, fsdp) for batch, so its embed stays whole.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from bert_jax import axes

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.EMBED, "fsdp"),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.VOCAB, "tensor"),
    (axes.KV, None),
    (axes.LENGTH, None),
    (axes.POSITIONS, None),
    (axes.LABELS, None),
    (axes.LAYERS, None),
    (axes.PREDICTIONS, None),
)


def mesh_shape(shape: dict[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves a {'data': -1, 'fsdp': 2, 'tensor': 1} dict (-1 = the remaining devices)."""
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh axes {unknown} are not among {MESH_AXES}")
  sizes = [int(shape.get(name, 1)) for name in MESH_AXES]
  if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh {dict(shape)}: sizes must be positive with at most one -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if num_devices % fixed:
    raise ValueError(f"mesh {dict(shape)} does not divide the {num_devices} devices")
  sizes = [num_devices // fixed if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(shape)} uses {math.prod(sizes)} devices, "
                     f"but {num_devices} are present")
  return tuple(sizes)


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types (Explicit breaks nn.Embed on sharded ids)."""
  devices = list(devices) if devices is not None else jax.devices()
  sizes = mesh_shape(shape, len(devices))
  if devices == jax.devices():
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes))
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(sizes))


def logical_shardings(boxed_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree whose leaves are nn.LogicallyPartitioned (others replicate)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Sharding of [batch, ...] arrays: the batch axis over the data-parallel mesh axes."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes((axes.BATCH,), rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def create_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh, rules):
  """Runs `init_fn(rng)` (returning a boxed tree) so each array is born sharded.

  Returns (unboxed tree, its shardings). `jax.eval_shape` reads the logical names without
  allocating; `jax.jit(..., out_shardings=...)` then creates every shard on its device.
  """
  abstract = jax.eval_shape(init_fn, rng)
  shardings = logical_shardings(abstract, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    tree = jax.jit(lambda r: nn.meta.unbox(init_fn(r)), out_shardings=shardings)(rng)
  return tree, shardings


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays sharded over the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def put_global(value, sharding: NamedSharding) -> jax.Array:
  """A host value (the same on every process) placed as a global array with `sharding`."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def fetch(tree):
  """Device -> host for metrics: replicated arrays read from a local copy (multi-process safe)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError(f"cannot fetch a non-replicated global array of shape {x.shape}")
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree_util.tree_map(get, tree)


def per_device_bytes(tree) -> int:
  """Bytes that the first device holds of a tree of sharded arrays."""
  device = jax.devices()[0]
  total = 0
  for x in jax.tree_util.tree_leaves(tree):
    for shard in x.addressable_shards:
      if shard.device == device:
        total += shard.data.size * shard.data.dtype.itemsize
  return total


# --- runners: one pure step, two ways to run it ------------------------------------------


class MeshRunner:
  """Runs pure steps under jax.jit on a mesh: state sharded by logical names, donated."""

  def __init__(self, mesh: Mesh, rules, train_step: Callable, eval_step: Callable):
    self.mesh, self.rules = mesh, tuple(rules)
    self._train_fn, self._eval_fn = train_step, eval_step
    self.batch_sharding = batch_sharding(mesh, self.rules)
    self.state_shardings = None

  def context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def init(self, init_fn: Callable[[jax.Array], Any], rng: jax.Array):
    """Creates the state already sharded; compiles the steps for its shardings."""
    state, self.state_shardings = create_sharded(init_fn, rng, self.mesh, self.rules)
    with self.context():
      self._train = jax.jit(self._train_fn,
                            in_shardings=(self.state_shardings, self.batch_sharding,
                                          replicated(self.mesh)),
                            out_shardings=(self.state_shardings, None), donate_argnums=0)
      self._eval = jax.jit(self._eval_fn, in_shardings=(
          self.state_shardings.params, self.batch_sharding, replicated(self.mesh)))
    return state

  def abstract(self, state):
    """ShapeDtypeStructs with this mesh's shardings: where a restored checkpoint lands."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
        self.state_shardings)

  def place(self, state):
    """Host or single-device arrays -> this mesh's shardings (every process passes all)."""
    def put(x, s):
      if isinstance(x, jax.Array) and (x.sharding == s or not x.is_fully_addressable):
        return x  # already global, e.g. a fresh parameter
      return put_global(x, s) if jax.process_count() > 1 else jax.device_put(x, s)
    return jax.tree_util.tree_map(put, state, self.state_shardings)

  def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return global_batch(local, self.batch_sharding)

  def put_rng(self, key: jax.Array) -> jax.Array:
    """The step key, replicated once, so no step moves it between devices."""
    data = put_global(jax.random.key_data(key), replicated(self.mesh))
    impl = jax.random.key_impl(key)
    with self.context():
      return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl),
                     out_shardings=replicated(self.mesh))(data)

  def train_step(self, state, batch, rng):
    with self.context():
      return self._train(state, batch, rng)

  def eval_step(self, params, batch, rng):
    with self.context():
      return self._eval(params, batch, rng)

  def host_state(self, state):
    return state

  def params(self, state):
    return state.params


class PmapRunner:
  """Runs the same pure steps under jax.pmap: state replicated, batch split per device.

  The steps must have been built with `axis_name=PMAP_AXIS` (gradients and metric sums are
  reduced across devices inside the step).
  """

  def __init__(self, train_step: Callable, eval_step: Callable,
               devices: Sequence[jax.Device] | None = None):
    self.devices = list(devices) if devices is not None else jax.local_devices()
    self._train = jax.pmap(train_step, axis_name=PMAP_AXIS, donate_argnums=0,
                           devices=self.devices)
    self._eval = jax.pmap(eval_step, axis_name=PMAP_AXIS, devices=self.devices)
    self.state_shardings = None

  def context(self):
    return contextlib.nullcontext()

  def init(self, init_fn: Callable[[jax.Array], Any], rng: jax.Array):
    state = jax.jit(lambda r: nn.meta.unbox(init_fn(r)))(rng)
    device = jax.sharding.SingleDeviceSharding(self.devices[0])
    self.state_shardings = jax.tree_util.tree_map(lambda _: device, state)
    return self.place(state)

  def abstract(self, state):
    state = self.host_state(state)
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
        self.state_shardings)

  def place(self, state):
    return pmap_replicate(state, self.devices)

  def put_batch(self, local: dict[str, np.ndarray]):
    return pmap_put(pmap_shard_batch(local, len(self.devices)), self.devices)

  def put_rng(self, key: jax.Array) -> jax.Array:
    return pmap_replicate(key, self.devices)

  def train_step(self, state, batch, rng):
    state, metrics = self._train(state, batch, rng)
    return state, pmap_unreplicate(metrics)

  def eval_step(self, params, batch, rng):
    """(sums, outputs): sums are reduced in the step; outputs [devices, b, ...] -> [batch, ...]."""
    sums, outputs = self._eval(params, batch, rng)
    outputs = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), outputs)
    return pmap_unreplicate(sums), outputs

  def host_state(self, state):
    return pmap_unreplicate(state)

  def params(self, state):
    return state.params


# --- pmap data parallel --------------------------------------------------------------------

PMAP_AXIS = "devices"


def pmap_shard_batch(local: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  """[batch, ...] -> [devices, batch // devices, ...] for jax.pmap."""
  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(f"batch of {x.shape[0]} rows does not split over {num_devices} devices")
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])
  return {k: split(v) for k, v in local.items()}


def _stacked_sharding(devices: Sequence[jax.Device]) -> NamedSharding:
  """A leading axis laid over `devices`, one slice each: what jax.pmap takes and returns."""
  return NamedSharding(Mesh(np.asarray(devices), (PMAP_AXIS,)), PartitionSpec(PMAP_AXIS))


def pmap_replicate(tree, devices: Sequence[jax.Device] | None = None):
  """A copy of every leaf on each device, stacked on a leading axis."""
  devices = list(devices) if devices is not None else jax.local_devices()
  sharding = _stacked_sharding(devices)
  return jax.tree_util.tree_map(
      lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices),) + x.shape), sharding), tree)


def pmap_put(tree, devices: Sequence[jax.Device]):
  """[devices, ...] host arrays -> one slice per device."""
  return jax.device_put(tree, _stacked_sharding(devices))


def pmap_unreplicate(tree):
  return jax.tree_util.tree_map(lambda x: x[0], tree)
