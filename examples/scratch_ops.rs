use std::time::Instant;
use tch::{Device, Kind, Tensor};
fn main() {
    tch::set_num_threads(1);
    let mut a = Tensor::randn([3, 10], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([3, 10], (Kind::Float, Device::Cpu));
    let n = 200000;
    let t = Instant::now();
    for _ in 0..n {
        let _ = a.f_mul_scalar_(1.0).unwrap();
    }
    println!("mul_scalar_ {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = b.f_mul_scalar(1.0).unwrap();
    }
    println!("mul_scalar (alloc) {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = a.f_lerp_(&b, 0.1).unwrap();
    }
    println!("lerp_ {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = a.f_addcdiv_(&b, &b).unwrap();
    }
    println!("addcdiv_ {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = b.f_sqrt().unwrap();
    }
    println!("sqrt {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = tch::no_grad(|| a.f_add_scalar_(0.0).unwrap());
    }
    println!("no_grad(add_scalar_) {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
