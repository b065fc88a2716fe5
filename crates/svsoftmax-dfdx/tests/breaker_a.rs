//! Breaker: shapes, boundaries, clamps, errors vs the f64 reference.

use dfdx::prelude::*;
use svsoftmax_core::{reference, BeyondPi, CosineMatrix, Margin, Reduction, SvSoftmax, Targets};
use svsoftmax_core::{Error, Upstream};
use svsoftmax_dfdx::{DfdxFloat, Implementation, SvSoftmaxLoss};

const IMPLS: [Implementation; 2] = [Implementation::Composed, Implementation::Fused];

fn sample(n_rows: usize, n_classes: usize, seed: usize) -> Vec<f64> {
    (0..n_rows * n_classes)
        .map(|i| ((i * 37 + 11 + seed * 13) % 97) as f64 / 48.5 - 1.0)
        .collect()
}

fn reference(
    config: &SvSoftmax,
    data: &[f64],
    n_rows: usize,
    n_classes: usize,
    targets: &Targets,
) -> Result<(f64, Vec<f64>, Vec<f64>), Error> {
    let m = CosineMatrix::new(data, n_rows, n_classes)?;
    let up = Upstream::Scalar(1.0);
    let e = reference::forward_backward(config, m, targets, up)?;
    Ok((e.forward.loss, e.forward.row_losses, e.grad_cosines))
}

fn run<E: DfdxFloat>(
    config: &SvSoftmax,
    implementation: Implementation,
    data: &[f64],
    n_rows: usize,
    n_classes: usize,
    targets: &Targets,
) -> Result<(f64, Vec<f64>, Vec<f64>), Error>
where
    Cpu: Device<E>,
{
    let dev: Cpu = Default::default();
    let x = dev.tensor_from_vec(
        data.iter().map(|&v| E::round_from(v)).collect::<Vec<E>>(),
        (n_rows, n_classes),
    );
    let loss = SvSoftmaxLoss::new(*config).with_implementation(implementation);
    let rows = loss.row_losses(x.clone(), targets)?;
    let rows: Vec<f64> = rows.as_vec().iter().map(|v| v.widen()).collect();
    let value = loss.loss(x.leaky_trace(), targets)?;
    let v = value.as_vec()[0].widen();
    let g = value.backward().get(&x).as_vec();
    Ok((v, rows, g.iter().map(|v| v.widen()).collect()))
}

fn close(a: f64, e: f64, tol: f64) -> bool {
    (a - e).abs() <= tol * (1.0 + e.abs())
}

fn check_all(
    what: &str,
    config: &SvSoftmax,
    data: &[f64],
    n_rows: usize,
    n_classes: usize,
    targets: &Targets,
) {
    let expected = reference(config, data, n_rows, n_classes, targets);
    for implementation in IMPLS {
        let got64 = run::<f64>(config, implementation, data, n_rows, n_classes, targets);
        match (&expected, &got64) {
            (Ok(e), Ok(g)) => {
                assert!(close(g.0, e.0, 1e-9), "{what} {implementation:?} f64 loss {} vs {}", g.0, e.0);
                for (i, (a, b)) in g.1.iter().zip(&e.1).enumerate() {
                    assert!(close(*a, *b, 1e-9), "{what} {implementation:?} f64 row {i}: {a} vs {b}");
                }
                for (i, (a, b)) in g.2.iter().zip(&e.2).enumerate() {
                    assert!(close(*a, *b, 1e-9), "{what} {implementation:?} f64 grad {i}: {a} vs {b}");
                }
                assert_eq!(g.2.len(), e.2.len());
            }
            (Err(e), Err(g)) => assert_eq!(e.to_string(), g.to_string(), "{what} {implementation:?}"),
            _ => panic!("{what} {implementation:?} f64: reference {expected:?} vs {got64:?}"),
        }
        let got32 = run::<f32>(config, implementation, data, n_rows, n_classes, targets);
        match (&expected, &got32) {
            (Ok(e), Ok(g)) => {
                let tol = 1e-3;
                assert!(close(g.0, e.0, tol), "{what} {implementation:?} f32 loss {} vs {}", g.0, e.0);
                let gmax = e.2.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in g.2.iter().zip(&e.2).enumerate() {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + gmax),
                        "{what} {implementation:?} f32 grad {i}: {a} vs {b}"
                    );
                }
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{what} {implementation:?} f32: reference {expected:?} vs {got32:?}"),
        }
    }
}

fn margins() -> Vec<(&'static str, SvSoftmax)> {
    let b = || SvSoftmax::builder().scale(30.0).t(1.3);
    let mut v = vec![
        ("plain", b().build().unwrap()),
        ("am", b().margin(Margin::additive(0.35)).build().unwrap()),
        ("fixed", b().margin(Margin::additive(0.35)).indicator(svsoftmax_core::Indicator::Fixed).build().unwrap()),
        ("mult4", b().margin(Margin::Multiplicative { m: 4, lambda: 0.0 }).build().unwrap()),
        ("mult3l", b().margin(Margin::Multiplicative { m: 3, lambda: 5.0 }).build().unwrap()),
        ("sum", b().margin(Margin::additive(0.2)).reduction(Reduction::Sum).build().unwrap()),
        ("none", b().margin(Margin::additive(0.2)).reduction(Reduction::None).build().unwrap()),
        (
            "straight",
            b().margin(Margin::angular(0.5))
                .angular_gradient(svsoftmax_core::AngularGradient::StraightThrough)
                .build()
                .unwrap(),
        ),
    ];
    for bp in [BeyondPi::Easy, BeyondPi::Clip, BeyondPi::Fallback] {
        v.push(("arc", b().margin(Margin::Angular { m: 0.5, beyond_pi: bp }).build().unwrap()));
        v.push((
            "combined",
            b().margin(Margin::Combined { m1: 1.3, m2: 0.3, m3: 0.1, beyond_pi: bp })
                .build()
                .unwrap(),
        ));
        v.push((
            "combined1",
            b().margin(Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.1, beyond_pi: bp })
                .build()
                .unwrap(),
        ));
    }
    v
}

#[test]
fn odd_shapes() {
    for (name, config) in margins() {
        for (r, k) in [(1, 2), (1, 300), (300, 2), (5, 3)] {
            let data = sample(r, k, 1);
            let t0: Vec<usize> = (0..r).map(|_| 0).collect();
            let tl: Vec<usize> = (0..r).map(|_| k - 1).collect();
            let tm: Vec<usize> = (0..r).map(|i| (i * 7) % k).collect();
            for t in [t0, tl, tm] {
                check_all(&format!("{name} {r}x{k}"), &config, &data, r, k, &Targets::new(&t));
            }
            let ign: Vec<Option<usize>> = (0..r).map(|i| (i % 2 == 1).then_some(i % k)).collect();
            check_all(&format!("{name} {r}x{k} ign"), &config, &data, r, k, &Targets::with_ignored(ign));
            let all_ign: Vec<Option<usize>> = vec![None; r];
            check_all(&format!("{name} {r}x{k} allign"), &config, &data, r, k, &Targets::with_ignored(all_ign));
        }
    }
}

#[test]
fn zero_rows() {
    for (name, config) in margins() {
        check_all(&format!("{name} 0x3"), &config, &[], 0, 3, &Targets::new(&[]));
    }
}

#[test]
fn ties_at_the_mask_boundary() {
    // c_y - m == c_k exactly: 0.75 - 0.25 = 0.5, a tie, not a support vector.
    let config = SvSoftmax::builder()
        .scale(10.0)
        .t(3.0)
        .margin(Margin::additive(0.25))
        .build()
        .unwrap();
    let data = vec![0.75, 0.5, 0.5, 0.25, 0.5000001, 0.75, 0.0, 0.5];
    check_all("tie", &config, &data, 2, 4, &Targets::new(&[0, 1]));
    // Plain: c_k == c_y exactly.
    let config = SvSoftmax::builder().scale(10.0).t(3.0).build().unwrap();
    let data = vec![0.3, 0.3, 0.3, -0.3];
    check_all("tie plain", &config, &data, 1, 4, &Targets::new(&[1]));
}

#[test]
fn unit_and_past_unit_cosines() {
    for (name, config) in margins() {
        for (a, b) in [(1.0, -1.0), (1.00005, -1.00005), (-1.00005, 1.00005), (-1.0, 1.0), (1.0, 1.0), (-1.0, -1.0)] {
            let data = vec![a, b, 0.3, b, a, -0.2, a, a, b];
            check_all(&format!("{name} {a} {b}"), &config, &data, 3, 3, &Targets::new(&[0, 0, 2]));
        }
    }
}

#[test]
fn out_of_tolerance_is_an_error_with_row_and_col() {
    let config = SvSoftmax::builder().margin(Margin::angular(0.5)).build().unwrap();
    let data = vec![0.5, 0.1, -0.2, 0.6, 1.001, -0.9];
    let expected = reference(&config, &data, 2, 3, &Targets::new(&[0, 1])).unwrap_err();
    for implementation in IMPLS {
        let got = run::<f64>(&config, implementation, &data, 2, 3, &Targets::new(&[0, 1])).unwrap_err();
        assert_eq!(got.to_string(), expected.to_string());
        let got = run::<f32>(&config, implementation, &data, 2, 3, &Targets::new(&[0, 1])).unwrap_err();
        assert!(matches!(got, Error::CosineOutOfRange { row: 1, col: 1, .. }), "{got}");
    }
}

#[test]
fn nan_in_ignored_rows_is_fine_and_in_active_rows_is_named() {
    for (name, config) in margins() {
        let mut data = sample(3, 4, 2);
        data[4] = f64::NAN;
        data[6] = f64::INFINITY;
        data[9] = 2.0; // out of range for the arccos margins, in an active row
        let targets = Targets::with_ignored(vec![Some(0), None, Some(3)]);
        check_all(&format!("{name} nan ign"), &config, &data, 3, 4, &targets);
        data[9] = f64::NAN;
        check_all(&format!("{name} nan active"), &config, &data, 3, 4, &targets);
    }
}

#[test]
fn huge_scale() {
    for s in [1e6, 1e15, 1e30] {
        for (_, config) in margins() {
            let config = SvSoftmax::builder()
                .scale(s)
                .t(config.t())
                .margin(config.margin())
                .reduction(config.reduction())
                .build()
                .unwrap();
            let data = sample(3, 5, 3);
            check_all(&format!("s={s} {:?}", config.margin()), &config, &data, 3, 5, &Targets::new(&[0, 4, 2]));
        }
    }
}

#[test]
fn scale_overflowing_f32() {
    let config = SvSoftmax::builder().scale(1e39).build().unwrap();
    let data = sample(2, 3, 0);
    for implementation in IMPLS {
        let got = run::<f32>(&config, implementation, &data, 2, 3, &Targets::new(&[0, 1]));
        assert!(matches!(got, Err(Error::Hyperparameter { .. })), "{got:?}");
        run::<f64>(&config, implementation, &data, 2, 3, &Targets::new(&[0, 1])).unwrap();
    }
}

#[test]
fn large_f32_scale_with_angular_margin() {
    // s fits f32, s * slope (up to ~2000) does not.
    let config = SvSoftmax::builder()
        .scale(1e36)
        .t(1.0)
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let data = vec![1.0, 0.2, -0.3, 0.1, 0.999, -0.5];
    let targets = Targets::new(&[0, 1]);
    let e = reference(&config, &data, 2, 3, &targets);
    println!("reference {e:?}");
    for implementation in IMPLS {
        let got = run::<f32>(&config, implementation, &data, 2, 3, &targets);
        println!("{implementation:?} f32 {got:?}");
    }
    let c = run::<f32>(&config, Implementation::Composed, &data, 2, 3, &targets);
    let f = run::<f32>(&config, Implementation::Fused, &data, 2, 3, &targets);
    assert_eq!(format!("{:?}", c.as_ref().map(|x| x.0)), format!("{:?}", f.as_ref().map(|x| x.0)));
}

#[test]
fn huge_additive_margin_f32() {
    let config = SvSoftmax::builder()
        .scale(30.0)
        .margin(Margin::additive(1e37))
        .build()
        .unwrap();
    let data = sample(2, 3, 0);
    let targets = Targets::new(&[0, 1]);
    let e = reference(&config, &data, 2, 3, &targets);
    println!("reference {e:?}");
    let c = run::<f32>(&config, Implementation::Composed, &data, 2, 3, &targets);
    let f = run::<f32>(&config, Implementation::Fused, &data, 2, 3, &targets);
    println!("composed {c:?}\nfused {f:?}");
    assert_eq!(
        c.as_ref().map(|x| x.0).map_err(|e| e.to_string()),
        f.as_ref().map(|x| x.0).map_err(|e| e.to_string())
    );
}

#[test]
fn cosines_overflowing_f32_logits() {
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2).unwrap();
    for big in [1e36, 3e36, 1e37, 1e38, 3.4e38] {
        let data = vec![0.5, big, -0.2, 0.6, 0.3, -0.9];
        let targets = Targets::new(&[0, 1]);
        let c = run::<f32>(&config, Implementation::Composed, &data, 2, 3, &targets);
        let f = run::<f32>(&config, Implementation::Fused, &data, 2, 3, &targets);
        println!("{big}: composed {c:?}\n fused {f:?}");
        assert_eq!(
            c.as_ref().map(|x| x.0).map_err(|e| e.to_string()),
            f.as_ref().map(|x| x.0).map_err(|e| e.to_string())
        );
        // Target column huge.
        let data = vec![big, 0.1, -0.2, 0.6, 0.3, -0.9];
        let c = run::<f32>(&config, Implementation::Composed, &data, 2, 3, &targets);
        let f = run::<f32>(&config, Implementation::Fused, &data, 2, 3, &targets);
        println!("{big} target: composed {c:?}\n fused {f:?}");
        assert_eq!(
            c.as_ref().map(|x| x.0).map_err(|e| e.to_string()),
            f.as_ref().map(|x| x.0).map_err(|e| e.to_string())
        );
    }
}

#[test]
fn target_errors() {
    let config = SvSoftmax::sv_am(30.0, 0.3, 1.2).unwrap();
    let data = sample(2, 3, 0);
    for targets in [Targets::new(&[0, 3]), Targets::new(&[0]), Targets::new(&[0, 1, 2]), Targets::new(&[usize::MAX, 0])] {
        let e = reference(&config, &data, 2, 3, &targets).unwrap_err();
        for implementation in IMPLS {
            let g = run::<f32>(&config, implementation, &data, 2, 3, &targets).unwrap_err();
            assert_eq!(g.to_string(), e.to_string());
        }
    }
    // one column
    let e = reference(&config, &[0.1, 0.2], 2, 1, &Targets::new(&[0, 0])).unwrap_err();
    for implementation in IMPLS {
        let g = run::<f64>(&config, implementation, &[0.1, 0.2], 2, 1, &Targets::new(&[0, 0])).unwrap_err();
        assert_eq!(g.to_string(), e.to_string());
    }
}
