import Foundation

/// Separable convolution resampling with PIL's arithmetic (Pillow `Resample.c` semantics):
/// per-axis coefficient tables whose support widens by the scale factor when shrinking,
/// weights normalised, then quantised to 22-bit fixed point; a horizontal pass then a vertical
/// pass, each rounding and clipping to 8 bits.
enum PILResample {
    static let precisionBits = 22  // 32 − 8 − 2, as in Pillow

    struct Table {
        var ksize: Int
        var starts: [Int]     // first input index per output index
        var counts: [Int]     // number of taps per output index
        var weights: [Int32]  // outSize × ksize fixed-point weights
    }

    static func bicubic(_ xIn: Double) -> Double {
        let a = -0.5
        let x = abs(xIn)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    static func table(inSize: Int, outSize: Int, support baseSupport: Double = 2,
                      filter: (Double) -> Double = bicubic) -> Table {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = baseSupport * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var starts = [Int](repeating: 0, count: outSize)
        var counts = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let one = Double(1 << precisionBits)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            // C's (int) cast truncates toward zero.
            var xmin = Int((center - support + 0.5).rounded(.towardZero))
            if xmin < 0 { xmin = 0 }
            var xmax = Int((center + support + 0.5).rounded(.towardZero))
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            xmax = min(max(xmax, 0), ksize)
            var ww = 0.0
            for x in 0..<xmax {
                let w = filter((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<xmax {
                let w = ww != 0 ? k[x] / ww : k[x]
                let f = w < 0 ? (-0.5 + w * one) : (0.5 + w * one)
                weights[xx * ksize + x] = Int32(f.rounded(.towardZero))
            }
            starts[xx] = xmin
            counts[xx] = xmax
        }
        return Table(ksize: ksize, starts: starts, counts: counts, weights: weights)
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        let s = v >> Int32(precisionBits)
        return s < 0 ? 0 : (s > 255 ? 255 : UInt8(truncatingIfNeeded: s))
    }

    /// Resizes `image` to `outW × outH` as `Image.resize((outW, outH), BICUBIC)` does for an
    /// RGB image. Pass order matters (each pass rounds to 8 bits): Pillow 13 runs the vertical
    /// pass first exactly when the height shrinks and by more than twice what the width
    /// shrinks, `(inH − outH) > 2·(inW − outW)` (found on a grid of sizes and confirmed on 400
    /// random size pairs, upscaling and mixed cases included); otherwise horizontal first.
    static func resize(_ image: RGBImage, width outW: Int, height outH: Int) -> RGBImage {
        let inW = image.width, inH = image.height
        if inW == outW && inH == outH { return image }
        precondition(inW > 0 && inH > 0 && outW > 0 && outH > 0, "resize: empty image")
        let verticalFirst = outH < inH && (inH - outH) > 2 * (inW - outW)
        var px = image.pixels
        var w = inW, h = inH
        if verticalFirst {
            px = vertical(px, width: w, height: h, outH: outH); h = outH
            px = horizontal(px, width: w, height: h, outW: outW); w = outW
        } else {
            if outW != inW { px = horizontal(px, width: w, height: h, outW: outW); w = outW }
            if outH != inH { px = vertical(px, width: w, height: h, outH: outH); h = outH }
        }
        return RGBImage(width: w, height: h, pixels: px)
    }

    static func horizontal(_ src: [UInt8], width inW: Int, height rows: Int, outW: Int) -> [UInt8] {
        let th = table(inSize: inW, outSize: outW)
        var tmp = [UInt8](repeating: 0, count: rows * outW * 3)
        let ks = th.ksize
        src.withUnsafeBufferPointer { s in
            tmp.withUnsafeMutableBufferPointer { d in
                th.weights.withUnsafeBufferPointer { wt in
                    th.starts.withUnsafeBufferPointer { starts in
                        th.counts.withUnsafeBufferPointer { counts in
                            for y in 0..<rows {
                                let row = s.baseAddress! + y * inW * 3
                                let out = d.baseAddress! + y * outW * 3
                                for xx in 0..<outW {
                                    let n = counts[xx]
                                    let k = wt.baseAddress! + xx * ks
                                    var s0: Int32 = 1 << 21, s1: Int32 = 1 << 21, s2: Int32 = 1 << 21
                                    var p = row + starts[xx] * 3
                                    for x in 0..<n {
                                        let w = k[x]
                                        s0 &+= Int32(p[0]) &* w
                                        s1 &+= Int32(p[1]) &* w
                                        s2 &+= Int32(p[2]) &* w
                                        p += 3
                                    }
                                    out[xx * 3] = clip8(s0)
                                    out[xx * 3 + 1] = clip8(s1)
                                    out[xx * 3 + 2] = clip8(s2)
                                }
                            }
                        }
                    }
                }
            }
        }
        return tmp
    }

    static func vertical(_ src: [UInt8], width w: Int, height inH: Int, outH: Int) -> [UInt8] {
        let tv = table(inSize: inH, outSize: outH)
        var dst = [UInt8](repeating: 0, count: w * outH * 3)
        let ks = tv.ksize
        let stride = w * 3
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                tv.weights.withUnsafeBufferPointer { wt in
                    var acc = [Int32](repeating: 0, count: stride)
                    acc.withUnsafeMutableBufferPointer { a in
                        for yy in 0..<outH {
                            let y0 = tv.starts[yy], n = tv.counts[yy]
                            let k = wt.baseAddress! + yy * ks
                            for i in 0..<stride { a[i] = 1 << 21 }
                            for y in 0..<n {
                                let wgt = k[y]
                                let row = s.baseAddress! + (y0 + y) * stride
                                for i in 0..<stride { a[i] &+= Int32(row[i]) &* wgt }
                            }
                            let out = d.baseAddress! + yy * stride
                            for i in 0..<stride { out[i] = clip8(a[i]) }
                        }
                    }
                }
            }
        }
        return dst
    }
}

/// Antialiased bilinear resampling on floats, the algorithm of `jax.image.resize(...,
/// "bilinear", antialias=True)` / `tf.image.resize(..., antialias=True)` used by big_vision:
/// a triangle kernel stretched by the scale factor when shrinking, sampled at pixel centres,
/// weights normalised per output pixel.
enum AntialiasBilinear {
    struct Table {
        var starts: [Int]
        var weights: [[Float]]
    }

    static func table(inSize: Int, outSize: Int) -> Table {
        let invScale = Double(inSize) / Double(outSize)
        let kernelScale = max(invScale, 1)
        var starts = [Int](repeating: 0, count: outSize)
        var weights = [[Float]](repeating: [], count: outSize)
        for i in 0..<outSize {
            let sample = (Double(i) + 0.5) * invScale - 0.5
            let lo = max(0, Int((sample - kernelScale).rounded(.down)))
            let hi = min(inSize - 1, Int((sample + kernelScale).rounded(.up)))
            var w = [Float]()
            var total = 0.0
            var ws = [Double]()
            if hi >= lo {
                for j in lo...hi {
                    let x = abs(sample - Double(j)) / kernelScale
                    let v = max(0, 1 - x)
                    ws.append(v)
                    total += v
                }
            }
            for v in ws { w.append(total > 0 ? Float(v / total) : 0) }
            starts[i] = lo
            weights[i] = w
        }
        return Table(starts: starts, weights: weights)
    }

    /// Resizes HWC float pixels (3 channels) to `outW × outH`; returns HWC floats.
    static func resize(_ src: [Float], width inW: Int, height inH: Int, outW: Int, outH: Int) -> [Float] {
        let th = table(inSize: inW, outSize: outW)
        let tv = table(inSize: inH, outSize: outH)
        var tmp = [Float](repeating: 0, count: inH * outW * 3)
        for y in 0..<inH {
            for xx in 0..<outW {
                var a: (Float, Float, Float) = (0, 0, 0)
                let x0 = th.starts[xx]
                for (t, w) in th.weights[xx].enumerated() {
                    let i = (y * inW + x0 + t) * 3
                    a.0 += src[i] * w; a.1 += src[i + 1] * w; a.2 += src[i + 2] * w
                }
                let o = (y * outW + xx) * 3
                tmp[o] = a.0; tmp[o + 1] = a.1; tmp[o + 2] = a.2
            }
        }
        var out = [Float](repeating: 0, count: outH * outW * 3)
        let stride = outW * 3
        for yy in 0..<outH {
            let y0 = tv.starts[yy]
            for (t, w) in tv.weights[yy].enumerated() {
                let r = (y0 + t) * stride, o = yy * stride
                for i in 0..<stride { out[o + i] += tmp[r + i] * w }
            }
        }
        return out
    }
}
