package dev.blipmq

import java.nio.file.Path

/**
 * How the client speaks TLS to the broker, given to [BlipMQ.connect] as
 * `tls = Tls(caFile = Path.of("ca.pem"))`. Every field is optional:
 * `Tls()` trusts the system's roots and checks the broker's certificate
 * against the address's host.
 *
 * @property caFile a PEM file of the CA certificates to trust instead of
 *   the system's roots.
 * @property caPem the same as PEM text; give [caFile] or [caPem].
 * @property certFile a PEM file of the client certificate chain, leaf
 *   first, for a broker that asks for one (mutual TLS); needs [keyFile].
 * @property keyFile the client certificate's private key (PEM).
 * @property serverName the name the broker's certificate must be for, when
 *   it is not the address's host (connecting by IP to a certificate for a
 *   DNS name).
 */
public data class Tls(
    val caFile: Path? = null,
    val caPem: String? = null,
    val certFile: Path? = null,
    val keyFile: Path? = null,
    val serverName: String? = null,
) {
    init {
        if (caFile != null && caPem != null) throw invalidArgument("give caFile or caPem, not both")
        if ((certFile == null) != (keyFile == null)) {
            throw invalidArgument("certFile and keyFile go together: give both or neither")
        }
    }

    internal fun toNative(): dev.blipmq.ffi.TlsOptions = dev.blipmq.ffi.TlsOptions(
        caFile = caFile?.toString(),
        caPem = caPem,
        certFile = certFile?.toString(),
        keyFile = keyFile?.toString(),
        serverName = serverName,
    )
}
