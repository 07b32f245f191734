//! The CPU reference of the GPU step reads a batch of runtime caches right: on the same caches
//! it equals the runtime's own attention. Runs everywhere (no GPU).

mod common;

use common::{decoded, policies, relative_error};
use fibquant::CacheShape;
use fibquant_cuda::layout::HostBatch;
use fibquant_cuda::plan::gpu_code;
use fibquant_cuda::reference;

/// f32 arithmetic in the runtime against f64 here, over a few hundred positions: the
/// differences are rounding, far below this.
const TOLERANCE: f64 = 1e-4;

#[test]
fn reference_equals_the_runtime_attention() {
    for (d, kvh, qh) in [(64, 2, 8), (128, 1, 8)] {
        let shape = CacheShape {
            layers: 1,
            query_heads: qh,
            kv_heads: kvh,
            head_dim: d,
        };
        let (k, v) = (gpu_code(d, 2.0).unwrap(), gpu_code(d, 4.0).unwrap());
        for (name, policy) in policies(k, v) {
            let (caches, queries, want) = decoded(shape, &policy, &[3, 200, 333], 7);
            let refs: Vec<_> = caches.iter().collect();
            let batch = HostBatch::from_caches(&refs, 0).unwrap();
            let got = reference::decode(&batch, &queries).unwrap();
            let err = relative_error(&got, &want);
            assert!(err < TOLERANCE, "d = {d}, {name}: relative error {err:e}");
        }
    }
}

#[test]
fn batches_that_do_not_fit_together_are_refused() {
    let shape = CacheShape {
        layers: 1,
        query_heads: 4,
        kv_heads: 1,
        head_dim: 64,
    };
    let code = gpu_code(64, 2.0).unwrap();
    let p = policies(code, code);
    let (a, _, _) = decoded(shape, &p[0].1, &[10], 1);
    let (b, _, _) = decoded(shape, &p[2].1, &[10], 1);
    let err = HostBatch::from_caches(&[&a[0], &b[0]], 0).unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
    assert!(HostBatch::from_caches(&[], 0).is_err());
    let empty = fibquant::KvCache::new(shape, p[0].1.clone()).unwrap();
    assert!(HostBatch::from_caches(&[&empty], 0).is_err());
}
