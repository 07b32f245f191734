//! The device: its context and stream, kernels compiled by NVRTC on first use (one module per
//! configuration, cached), uploads and launches.

use crate::error::{Error, Result};
use crate::layout::{HeadCounts, HostBatch, PoolLayout};
use crate::plan::SplitPlan;
use crate::source::{DecodeConfig, EncodeConfig, SideFormat, THREADS};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use fibquant::Codec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The fill kernels' source (public for compile checks).
pub const FILL_SOURCE: &str = FILL_CU;

/// Fills synthetic caches (benchmarks): bytes and binary16 values from a hash of the index.
const FILL_CU: &str = r#"
typedef unsigned int u32; typedef unsigned char u8; typedef unsigned short half;
__device__ __forceinline__ u32 mix(u32 x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x;
}
__device__ __forceinline__ half f2h(float f) { half h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
// Slots of `slot` bytes: random indices, a norm in [0.5, 1.5) * norm_scale (binary16).
extern "C" __global__ void fill_slots(u8* p, unsigned long long n_slots, int slot, u32 seed, float norm_scale) {
    unsigned long long bytes = n_slots * (unsigned long long)slot;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < bytes;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long s = i / slot; int o = (int)(i % slot);
        if (o < 2) {
            float u = (mix((u32)s ^ seed) >> 8) * (1.0f / 16777216.0f);
            half h = f2h((0.5f + u) * norm_scale);
            p[i] = (u8)(h >> (8 * o));
        } else {
            p[i] = (u8)mix((u32)i * 2654435761u ^ seed);
        }
    }
}
// Binary16 values uniform in [-1, 1).
extern "C" __global__ void fill_half(half* p, unsigned long long n, u32 seed) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float u = (mix((u32)i ^ seed) >> 8) * (1.0f / 8388608.0f) - 1.0f;
        p[i] = f2h(u);
    }
}
"#;

/// Compiles `source` to PTX for `arch` (`compute_90`, ...) with NVRTC alone (no device
/// needed): how the kernels are checked on machines with NVRTC but no GPU.
pub fn compile_only(source: &str, arch: &str) -> Result<()> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::NoGpu("NVRTC (libnvrtc) cannot be loaded".into()));
    }
    compile(source, arch).map(drop)
}

fn compile(source: &str, arch: &str) -> Result<cudarc::nvrtc::Ptx> {
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            Error::Compile(log.to_string_lossy().into_owned())
        }
        other => Error::Compile(format!("{other:?}")),
    })
}

/// The compiled decode kernels of one configuration.
struct DecodeKernels {
    prepare: CudaFunction,
    attend: CudaFunction,
    combine: CudaFunction,
}

/// A GPU with FibQuant kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    sms: usize,
    max_shared: usize,
    decode: Mutex<HashMap<DecodeConfig, Arc<DecodeKernels>>>,
    encode: Mutex<HashMap<EncodeConfig, Arc<CudaFunction>>>,
    fill: Mutex<Option<Arc<(CudaFunction, CudaFunction)>>>,
}

/// A batch of caches on the device (see [`crate::layout`]), with the buffers a step needs.
pub struct DeviceBatch {
    config: DecodeConfig,
    kernels: Arc<DecodeKernels>,
    kv_heads: usize,
    batch: usize,
    score_scale: f32,
    layout: PoolLayout,
    plan: SplitPlan,
    /// The pools, held so that the addresses in `descriptors` stay valid.
    _pools: (
        CudaSlice<u8>,
        CudaSlice<u16>,
        CudaSlice<u32>,
        CudaSlice<f32>,
    ),
    descriptors: CudaSlice<u64>,
    key_rotation: CudaSlice<f32>,
    value_rotation: CudaSlice<f32>,
    key_codebook: CudaSlice<f32>,
    value_codebook: CudaSlice<f32>,
    prep: CudaSlice<f32>,
    partial: CudaSlice<f32>,
}

impl DeviceBatch {
    /// What the kernels are compiled for.
    pub fn config(&self) -> &DecodeConfig {
        &self.config
    }

    /// The split plan of a step.
    pub fn plan(&self) -> SplitPlan {
        self.plan
    }

    /// Sequences x kv heads.
    pub fn heads(&self) -> usize {
        self.batch * self.kv_heads
    }

    /// Query values a step takes and writes: sequences x query heads x d.
    pub fn query_len(&self) -> usize {
        self.heads() * self.config.group * self.config.dim
    }

    /// Bytes of cache a step reads: every slot, fp16 row, mean and block end.
    pub fn cache_bytes(&self) -> usize {
        let d = self.config.dim;
        let slot = [
            self.config.key.map_or(0, |f| f.slot_bytes),
            self.config.value.map_or(0, |f| f.slot_bytes),
        ];
        self.layout
            .counts
            .iter()
            .map(|c| {
                (0..2)
                    .map(|s| {
                        c.coded[s] * slot[s]
                            + (c.sinks + c.tail(s)) * d * 2
                            + c.blocks[s] * (d * 2 + 4)
                    })
                    .sum::<usize>()
            })
            .sum()
    }
}

fn upload<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    s: &Arc<CudaStream>,
    v: &[T],
) -> Result<CudaSlice<T>> {
    if v.is_empty() {
        // A one-element buffer stands in for an absent part (never read).
        return Ok(s.alloc_zeros::<T>(1)?);
    }
    Ok(s.clone_htod(v)?)
}

fn ptr<T>(s: &Arc<CudaStream>, x: &CudaSlice<T>) -> u64 {
    let (p, _sync) = x.device_ptr(s);
    p
}

impl Gpu {
    /// The GPU of `ordinal`. [`Error::NoGpu`] when the CUDA driver or NVRTC library cannot be
    /// loaded or there is no such device.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        // SAFETY: these only try to dlopen the libraries; nothing is called through them yet.
        let present = unsafe {
            cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present()
        };
        if !present {
            return Err(Error::NoGpu(
                "the CUDA driver (libcuda) or NVRTC (libnvrtc) cannot be loaded".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| Error::NoGpu(format!("{e:?}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoGpu(format!("device {ordinal} of {count}")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoGpu(format!("{e:?}")))?;
        let (major, minor) = ctx.compute_capability()?;
        let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let max_shared = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: format!("compute_{major}{minor}"),
            sms: sms as usize,
            max_shared: max_shared as usize,
            decode: Mutex::new(HashMap::new()),
            encode: Mutex::new(HashMap::new()),
            fill: Mutex::new(None),
        })
    }

    /// The device's name and compute capability.
    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "?".into());
        format!("{name} ({}), {} SMs", self.arch, self.sms)
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Multiprocessors.
    pub fn sms(&self) -> usize {
        self.sms
    }

    fn module(&self, source: &str, names: &[&str]) -> Result<Vec<CudaFunction>> {
        let ptx = compile(source, &self.arch)?;
        let module = self.ctx.load_module(ptx)?;
        names
            .iter()
            .map(|n| module.load_function(n).map_err(Error::from))
            .collect()
    }

    fn decode_kernels(&self, config: &DecodeConfig) -> Result<Arc<DecodeKernels>> {
        config.check()?;
        let mut cache = self.decode.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(config) {
            return Ok(k.clone());
        }
        let shared = config.attend_shared_bytes();
        if shared > self.max_shared {
            return Err(Error::Unsupported(format!(
                "{shared} bytes of shared memory per CTA, the device offers {}",
                self.max_shared
            )));
        }
        let f = self.module(
            &config.source(),
            &["prepare", "attend", "combine", "layout_check"],
        )?;
        let [prepare, attend, combine, check]: [CudaFunction; 4] = f
            .try_into()
            .map_err(|_| Error::Compile("the module lacks a kernel".into()))?;
        // The host's sizes of the shared memory and of a head descriptor must be the kernel's.
        let mut facts = self.stream.alloc_zeros::<u32>(2)?;
        // SAFETY: layout_check writes two u32 into a buffer of two.
        unsafe {
            self.stream
                .launch_builder(&check)
                .arg(&mut facts)
                .launch(LaunchConfig::for_num_elems(1))
        }?;
        let facts = self.stream.clone_dtoh(&facts)?;
        let want = [shared as u32, (crate::layout::HEAD_FIELDS * 8) as u32];
        if facts != want {
            return Err(Error::Unsupported(format!(
                "kernel layout {facts:?} (shared bytes, descriptor bytes) differs from the host's {want:?}"
            )));
        }
        attend.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            shared as i32,
        )?;
        let k = Arc::new(DecodeKernels {
            prepare,
            attend,
            combine,
        });
        cache.insert(*config, k.clone());
        Ok(k)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        config: DecodeConfig,
        batch: usize,
        kv_heads: usize,
        score_scale: f32,
        layout: PoolLayout,
        pools: (
            CudaSlice<u8>,
            CudaSlice<u16>,
            CudaSlice<u32>,
            CudaSlice<f32>,
        ),
        tables: [Vec<f32>; 4],
    ) -> Result<DeviceBatch> {
        let s = &self.stream;
        let (bytes, halves, ends, floats) = pools;
        let bases = [
            ptr(s, &bytes),
            ptr(s, &halves),
            ptr(s, &ends),
            ptr(s, &floats),
        ];
        let descriptors = upload(s, &layout.descriptors(bases))?;
        let max_after = layout
            .counts
            .iter()
            .map(|c| c.len - c.sinks)
            .max()
            .unwrap_or(0);
        let heads = batch * kv_heads;
        let kernels = self.decode_kernels(&config)?;
        let per_sm = kernels
            .attend
            .occupancy_max_active_blocks_per_multiprocessor(
                THREADS as u32,
                config.attend_shared_bytes(),
                None,
            )?;
        let plan = SplitPlan::new(heads, max_after, per_sm.max(1) as usize * self.sms);
        let g = config.group;
        let d = config.dim;
        let partial = s.alloc_zeros::<f32>(heads * plan.splits * (2 * g + 2 * g * d))?;
        let prep = s.alloc_zeros::<f32>(heads * 2 * g * d)?;
        let [kr, vr, kc, vc] = tables;
        Ok(DeviceBatch {
            config,
            kernels,
            kv_heads,
            batch,
            score_scale,
            layout,
            plan,
            _pools: (bytes, halves, ends, floats),
            descriptors,
            key_rotation: upload(s, &kr)?,
            value_rotation: upload(s, &vr)?,
            key_codebook: upload(s, &kc)?,
            value_codebook: upload(s, &vc)?,
            prep,
            partial,
        })
    }

    /// Registers per thread, local (spilled) bytes per thread and dynamic shared bytes of the
    /// `attend` kernel of `config` (compiling it if needed): for benchmark reports.
    pub fn attend_resources(&self, config: &DecodeConfig) -> Result<(i32, i32, usize)> {
        let k = self.decode_kernels(config)?;
        Ok((
            k.attend.num_regs()?,
            k.attend.local_size_bytes()?,
            config.attend_shared_bytes(),
        ))
    }

    /// Uploads a host batch.
    pub fn upload(&self, host: &HostBatch) -> Result<DeviceBatch> {
        host.config.check()?;
        let counts = host.counts();
        let layout = PoolLayout::new(&host.config, &counts);
        let mut bytes = vec![0u8; layout.sizes[0]];
        let mut halves = vec![0u16; layout.sizes[1]];
        let mut ends = vec![0u32; layout.sizes[2]];
        let mut floats = vec![0f32; layout.sizes[3]];
        for (h, o) in host.heads.iter().zip(&layout.offsets) {
            for (s, side) in [&h.keys, &h.values].into_iter().enumerate() {
                bytes[o[s]..o[s] + side.slots.len()].copy_from_slice(&side.slots);
                halves[o[2 + s]..o[2 + s] + side.sinks.len()].copy_from_slice(&side.sinks);
                halves[o[4 + s]..o[4 + s] + side.tail.len()].copy_from_slice(&side.tail);
                if !side.means.is_empty() {
                    halves[o[6 + s]..o[6 + s] + side.means.len()].copy_from_slice(&side.means);
                    ends[o[8 + s]..o[8 + s] + side.block_ends.len()]
                        .copy_from_slice(&side.block_ends);
                }
            }
            if let Some(sc) = &h.key_scale {
                floats[o[10]..o[10] + sc.len()].copy_from_slice(sc);
            }
        }
        let s = &self.stream;
        let pools = (
            upload(s, &bytes)?,
            upload(s, &halves)?,
            upload(s, &ends)?,
            upload(s, &floats)?,
        );
        self.finish(
            host.config,
            host.batch,
            host.kv_heads,
            host.score_scale,
            layout,
            pools,
            [
                host.key_rotation.clone(),
                host.value_rotation.clone(),
                host.key_codebook.clone(),
                host.value_codebook.clone(),
            ],
        )
    }

    fn fill_kernels(&self) -> Result<Arc<(CudaFunction, CudaFunction)>> {
        let mut f = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = f.as_ref() {
            return Ok(k.clone());
        }
        let [slots, halves]: [CudaFunction; 2] = self
            .module(FILL_CU, &["fill_slots", "fill_half"])?
            .try_into()
            .map_err(|_| Error::Compile("the module lacks a kernel".into()))?;
        let k = Arc::new((slots, halves));
        *f = Some(k.clone());
        Ok(k)
    }

    /// A synthetic batch for benchmarks: every head holds `counts`, slots with random indices
    /// and norms, random fp16 rows and means, blocks of `block_len` slots, key scales near 1,
    /// the given codebooks and rotations (random data decodes to finite values with them).
    #[allow(clippy::too_many_arguments)]
    pub fn synthetic(
        &self,
        config: DecodeConfig,
        batch: usize,
        kv_heads: usize,
        counts: HeadCounts,
        block_len: usize,
        tables: [Vec<f32>; 4],
        seed: u32,
    ) -> Result<DeviceBatch> {
        config.check()?;
        let all = vec![counts; batch * kv_heads];
        let layout = PoolLayout::new(&config, &all);
        let s = &self.stream;
        let bytes = s.alloc_zeros::<u8>(layout.sizes[0])?;
        let mut halves = s.alloc_zeros::<u16>(layout.sizes[1])?;
        let fill = self.fill_kernels()?;
        let grid = LaunchConfig {
            grid_dim: (self.sms as u32 * 8, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let n_halves = layout.sizes[1] as u64;
        // SAFETY: fill_half writes n_halves elements of a buffer of that many.
        unsafe {
            s.launch_builder(&fill.1)
                .arg(&mut halves)
                .arg(&n_halves)
                .arg(&seed)
                .launch(grid)
        }?;
        let norm_scale = (config.dim as f32).sqrt();
        let base = ptr(s, &bytes);
        for o in &layout.offsets {
            for (side, f) in [config.key, config.value].iter().enumerate() {
                let (Some(f), n) = (f, counts.coded[side] as u64) else {
                    continue;
                };
                if n == 0 {
                    continue;
                }
                let at = base + o[side] as u64;
                let slot = f.slot_bytes as i32;
                let sd = seed ^ (o[side] as u32);
                // SAFETY: the region at `at` holds n slots of `slot` bytes (PoolLayout).
                unsafe {
                    s.launch_builder(&fill.0)
                        .arg(&at)
                        .arg(&n)
                        .arg(&slot)
                        .arg(&sd)
                        .arg(&norm_scale)
                        .launch(grid)
                }?;
            }
        }
        let mut ends = vec![0u32; layout.sizes[2]];
        let mut floats = vec![0f32; layout.sizes[3]];
        for o in &layout.offsets {
            for s2 in 0..2 {
                for b in 0..counts.blocks[s2] {
                    ends[o[8 + s2] + b] = ((b + 1) * block_len).min(counts.coded[s2]) as u32;
                }
            }
            if counts.scaled {
                for i in 0..config.dim {
                    floats[o[10] + i] = 0.75 + 0.5 * ((i * 7919) % 97) as f32 / 97.0;
                }
            }
        }
        let pools = (bytes, halves, upload(s, &ends)?, upload(s, &floats)?);
        let scale = 1.0 / (config.dim as f32).sqrt();
        self.finish(config, batch, kv_heads, scale, layout, pools, tables)
    }

    /// One decode step on the device: `queries` (sequences x query heads x d, the query heads
    /// of kv head `h` at `h * group ..`) into `out` (same shape). Queries are the caller's:
    /// non-finite ones give non-finite outputs ([`decode`](Self::decode) checks them).
    pub fn decode_on_device(
        &self,
        batch: &mut DeviceBatch,
        queries: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let n = batch.query_len();
        if queries.len() != n || out.len() != n {
            return Err(Error::InvalidInput(format!(
                "queries and output must hold {n} values, got {} and {}",
                queries.len(),
                out.len()
            )));
        }
        let k = batch.kernels.clone();
        let s = &self.stream;
        let (kvh, b) = (batch.kv_heads as u32, batch.batch as u32);
        let d = batch.config.dim as u32;
        let kv_heads = batch.kv_heads as i32;
        let plan = batch.plan;
        let (split_len, splits) = (plan.split_len as i32, plan.splits as i32);
        // SAFETY: the descriptors hold addresses of the batch's pools (alive with the batch),
        // sized by PoolLayout for the counts they carry; queries, prep, partial and out are
        // sized for batch x kv heads x group x d as checked above and in `finish`.
        unsafe {
            s.launch_builder(&k.prepare)
                .arg(&batch.descriptors)
                .arg(&kv_heads)
                .arg(queries)
                .arg(&batch.key_rotation)
                .arg(&mut batch.prep)
                .launch(LaunchConfig {
                    grid_dim: (kvh, b, 1),
                    block_dim: (d, 1, 1),
                    shared_mem_bytes: 0,
                })?;
            s.launch_builder(&k.attend)
                .arg(&batch.descriptors)
                .arg(&kv_heads)
                .arg(&batch.prep)
                .arg(&batch.key_codebook)
                .arg(&batch.value_codebook)
                .arg(&batch.score_scale)
                .arg(&split_len)
                .arg(&splits)
                .arg(&mut batch.partial)
                .launch(LaunchConfig {
                    grid_dim: (plan.splits as u32, kvh, b),
                    block_dim: (THREADS as u32, 1, 1),
                    shared_mem_bytes: batch.config.attend_shared_bytes() as u32,
                })?;
            s.launch_builder(&k.combine)
                .arg(&kv_heads)
                .arg(&batch.partial)
                .arg(&splits)
                .arg(&batch.value_rotation)
                .arg(out)
                .launch(LaunchConfig {
                    grid_dim: (kvh, b, 1),
                    block_dim: (d, 1, 1),
                    shared_mem_bytes: 0,
                })?;
        }
        Ok(())
    }

    /// One decode step from host queries (checked finite) to host outputs.
    pub fn decode(&self, batch: &mut DeviceBatch, queries: &[f32]) -> Result<Vec<f32>> {
        if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "query value {i} is not finite"
            )));
        }
        if queries.len() != batch.query_len() {
            return Err(Error::InvalidInput(format!(
                "{} query values, the batch takes {}",
                queries.len(),
                batch.query_len()
            )));
        }
        let q = upload(&self.stream, queries)?;
        let mut out = self.stream.alloc_zeros::<f32>(queries.len())?;
        self.decode_on_device(batch, &q, &mut out)?;
        Ok(self.stream.clone_dtoh(&out)?)
    }

    /// Encodes `rows` (`count x d`, already centered and scaled as the cache stores them) with
    /// `codec` into slots, on the GPU. Nothing is returned for a batch with a bad row: the
    /// error names the first.
    pub fn encode(&self, codec: &Codec, rows: &[f32]) -> Result<Vec<u8>> {
        let d = codec.dim();
        if !rows.len().is_multiple_of(d) {
            return Err(Error::InvalidInput(format!(
                "{} values are not whole rows of {d}",
                rows.len()
            )));
        }
        let count = rows.len() / d;
        let format = SideFormat::of(codec, false);
        let cb = codec.codebook();
        let words = cb.codewords();
        let scalar = format.k == 1 && words.windows(2).all(|w| w[0] < w[1]);
        let config = EncodeConfig {
            dim: d,
            format,
            scalar,
        };
        config.check()?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let f = {
            let mut cache = self.encode.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&config) {
                Some(f) => f.clone(),
                None => {
                    let [f]: [CudaFunction; 1] = self
                        .module(&config.source(), &["encode"])?
                        .try_into()
                        .map_err(|_| Error::Compile("the module lacks a kernel".into()))?;
                    let f = Arc::new(f);
                    f.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        config.shared_bytes() as i32,
                    )?;
                    cache.insert(config, f.clone());
                    f
                }
            }
        };
        let s = &self.stream;
        let rot = upload(s, &crate::layout::rotation_matrix(codec))?;
        let x = upload(s, rows)?;
        let words = upload(s, words)?;
        let nsq = upload(s, cb.norms_sq())?;
        let mut slots = s.alloc_zeros::<u8>(count * format.slot_bytes)?;
        let mut status = s.alloc_zeros::<u32>(count)?;
        let n = count as i32;
        // SAFETY: rows holds count x d floats, slots count x slot bytes, status count; the
        // codebook and its squared norms N x k and N; shared memory as EncodeConfig sizes it.
        unsafe {
            s.launch_builder(&f)
                .arg(&x)
                .arg(&n)
                .arg(&rot)
                .arg(&words)
                .arg(&nsq)
                .arg(&mut slots)
                .arg(&mut status)
                .launch(LaunchConfig {
                    grid_dim: ((count as u32).min(self.sms as u32 * 16), 1, 1),
                    block_dim: (d as u32, 1, 1),
                    shared_mem_bytes: config.shared_bytes() as u32,
                })
        }?;
        let status = s.clone_dtoh(&status)?;
        if let Some(row) = status.iter().position(|&v| v != 0) {
            let reason = if status[row] == 1 {
                "a value is not finite"
            } else {
                "its norm does not fit the norm format"
            };
            return Err(Error::BadRow { row, reason });
        }
        Ok(s.clone_dtoh(&slots)?)
    }

    /// An event that records time (cudarc's default event does not).
    fn timing_event(&self) -> Result<cudarc::driver::CudaEvent> {
        let flags = cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        Ok(self.ctx.new_event(Some(flags))?)
    }

    /// A device-to-device copy of `bytes` bytes, timed over `reps` runs: the achieved copy
    /// bandwidth in bytes per second (read + written), the ceiling a step's reads compare to.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        let s = &self.stream;
        let src = s.alloc_zeros::<u8>(bytes)?;
        let mut dst = s.alloc_zeros::<u8>(bytes)?;
        s.memcpy_dtod(&src, &mut dst)?;
        let start = self.timing_event()?;
        let end = self.timing_event()?;
        start.record(s)?;
        for _ in 0..reps {
            s.memcpy_dtod(&src, &mut dst)?;
        }
        end.record(s)?;
        end.synchronize()?;
        let ms = start.elapsed_ms(&end)? as f64;
        Ok(2.0 * bytes as f64 * reps as f64 / (ms / 1e3))
    }

    /// Times `f` (which enqueues work on the stream): the median over `rounds` of the mean
    /// time per call of `calls` calls, in microseconds.
    pub fn time_us(
        &self,
        rounds: usize,
        calls: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        let s = &self.stream;
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = self.timing_event()?;
            let end = self.timing_event()?;
            start.record(s)?;
            for _ in 0..calls {
                f()?;
            }
            end.record(s)?;
            end.synchronize()?;
            times.push(start.elapsed_ms(&end)? as f64 * 1e3 / calls as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Waits for the stream.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
