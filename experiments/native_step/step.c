// Feasibility prototype, not part of jelm: the Sodarace step of jelm.sim.physics on flat
// ground (muscles, damping, Jacobi bone sweeps with per-bone weights, ground contact with
// Coulomb friction, inelastic velocity cut, final clamp) as plain scalar C, one walker
// per loop iteration, links edge-major. No side entry, walls or ceiling: flat ground
// needs none. Built and measured by experiments/native_step.py.
#include <math.h>
#include <string.h>
typedef struct { float dt, g, damp, mu, k, c, ps; int substeps, iters; } P;
static inline float maxf(float a, float b){return a>b?a:b;}
static inline float minf(float a, float b){return a<b?a:b;}
// per walker: J joints (<=64), L links (<=256)
void run(int W, const int *nj, const int *nl, const int *li, const int *lj, const float *rest,
         const float *musc, const float *amp, const float *cph, const float *sph, const float *bw,
         float *X, float *Y, float *VX, float *VY, int steps, P p, int JM, int LM) {
  #pragma omp parallel for schedule(dynamic,16)
  for (int w = 0; w < W; w++) {
    int J = nj[w], L = nl[w];
    const int *I = li + w*LM, *Jx = lj + w*LM;
    const float *R = rest + w*LM, *M = musc + w*LM, *A = amp + w*LM, *C = cph + w*LM, *S = sph + w*LM, *BW = bw + w*LM;
    float x[64], y[64], vx[64], vy[64], x0[64], y0[64], ax[64], ay[64], pxs[64], pys[64]; int touched[64];
    memcpy(x, X + w*JM, J*4); memcpy(y, Y + w*JM, J*4); memcpy(vx, VX + w*JM, J*4); memcpy(vy, VY + w*JM, J*4);
    float h = p.dt / p.substeps, dampf = 1.0f/(1.0f + h*p.damp);
    for (int st = 0; st < steps; st++) for (int sub = 0; sub < p.substeps; sub++) {
      float t = (st + (float)sub/p.substeps) * p.dt; float s_t = sinf(p.ps*t), c_t = cosf(p.ps*t);
      for (int n = 0; n < J; n++) { ax[n] = 0; ay[n] = 0; }
      for (int l = 0; l < L; l++) { if (M[l] == 0.f) continue;
        int a = I[l], b = Jx[l]; float dx = x[b]-x[a], dy = y[b]-y[a];
        float d = sqrtf(dx*dx+dy*dy), inv = 1.0f/maxf(d,1e-6f), ux = dx*inv, uy = dy*inv;
        float target = R[l]*(1.0f + A[l]*(s_t*C[l] + c_t*S[l]));
        float rel = (vx[b]-vx[a])*ux + (vy[b]-vy[a])*uy;
        float ten = p.k*(d-target) + p.c*rel;
        ax[a] += ten*ux; ay[a] += ten*uy; ax[b] -= ten*ux; ay[b] -= ten*uy; }
      for (int n = 0; n < J; n++) {
        vx[n] = (vx[n] + h*ax[n])*dampf; vy[n] = (vy[n] + h*(ay[n]-p.g))*dampf;
        x0[n] = x[n]; y0[n] = y[n]; x[n] += h*vx[n]; y[n] += h*vy[n];
        pxs[n] = 0; pys[n] = 0; touched[n] = 0; }
      for (int it = 0; it < p.iters; it++) {
        for (int n = 0; n < J; n++) { ax[n] = 0; ay[n] = 0; }
        for (int l = 0; l < L; l++) { if (BW[l] == 0.f) continue;
          int a = I[l], b = Jx[l]; float dx = x[b]-x[a], dy = y[b]-y[a];
          float d = sqrtf(dx*dx+dy*dy); float e = 0.5f*BW[l]*(d-R[l])/maxf(d,1e-6f);
          ax[a] += e*dx; ay[a] += e*dy; ax[b] -= e*dx; ay[b] -= e*dy; }
        for (int n = 0; n < J; n++) {
          float nx = x[n] + ax[n], ny = y[n] + ay[n];
          float below = minf(ny, 0.f); float px = 0.f, py = -below;
          float nxx = nx + px, nyy = ny + py;
          if (py != 0.f) {
            float pl = fabsf(py); float nnx = 0.f, nny = py/pl;
            float mx = nxx - x0[n], my = nyy - y0[n]; float along = mx*nnx + my*nny;
            float tx = mx - along*nnx, ty = my - along*nny; float slide = sqrtf(tx*tx+ty*ty);
            float keep = 1.0f - p.mu*pl/maxf(slide,1e-12f); keep = keep < 0 ? 0 : (keep > 1 ? 1 : keep);
            nxx = x0[n] + along*nnx + keep*tx; nyy = y0[n] + along*nny + keep*ty; touched[n] = 1; }
          x[n] = nxx; y[n] = nyy; pxs[n] += px; pys[n] += py; }
      }
      for (int n = 0; n < J; n++) {
        float pvx = (x[n]-x0[n])/h, pvy = (y[n]-y0[n])/h;
        float pl = sqrtf(pxs[n]*pxs[n]+pys[n]*pys[n]);
        if (touched[n] && pl > 0.f) { float nnx = pxs[n]/pl, nny = pys[n]/pl;
          float vn = pvx*nnx + pvy*nny, vb = vx[n]*nnx + vy[n]*nny;
          float cut = maxf(vn - maxf(vb, 0.f), 0.f); pvx -= cut*nnx; pvy -= cut*nny; }
        vx[n] = pvx; vy[n] = pvy; y[n] = maxf(y[n], 0.f); }
    }
    memcpy(X + w*JM, x, J*4); memcpy(Y + w*JM, y, J*4); memcpy(VX + w*JM, vx, J*4); memcpy(VY + w*JM, vy, J*4);
  }
}
